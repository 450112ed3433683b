r"""Synthetic MSA data with a planted ground truth, in the same form as the MMSA pickles.

The real MOSI/MOSEI/SIMS features cannot be shipped, so tests and demos use this generator. It
plants a known amount of label information in each modality:

* labels: MOSI-style :math:`y \sim U[-3, 3]` rounded to the 1/3 grid (MOSI labels are means of
  annotator scores), or SIMS-style :math:`y \sim U[-1, 1]` rounded to the 0.2 grid; the rounding
  puts exact zeros in the data (about 1/18 of MOSI-style, 1/10 of SIMS-style labels), so
  Has0/Non0 metrics differ as on the real data;
* each modality :math:`m` has :math:`k_m = d_m - \text{nuisance}_m` informative columns and a
  fixed random unit direction :math:`w_m` in them. A valid frame :math:`t` of sample :math:`i` is

  .. math:: x_{it} = (a_{it} y_i + e_i)\, w_m + \epsilon_{it}, \quad
     e_i \sim N(0, s_m^2),\ \epsilon_{it} \sim N(0, s_m^2 I_{k_m}),\ s_m = \sigma_y / \mathrm{snr}_m

  where :math:`\sigma_y` is the standard deviation of the label distribution and :math:`a_{it}` is
  ``peak_gain`` on a random ``peak_frac`` of the frames ("salient" frames) and 1 elsewhere,
  rescaled so it averages to 1 over the valid frames of each sample. So the mean over valid
  frames, projected on :math:`w_m`, is :math:`y_i + e_i` plus averaged frame noise, and
  ``snr`` is the amplitude SNR :math:`\sigma_y / s_m` of that pooled projection;
* ``nuisance`` columns hold high-variance noise independent of :math:`y`: a per-sample offset plus
  per-frame noise, each :math:`N(0, \text{nuisance\_scale}^2)`;
* columns are shuffled by a fixed random permutation per modality; valid lengths are uniform in
  :math:`[\lceil T/2 \rceil, T]` for every modality (unaligned-style), frames after them are zero.

With the defaults (snr 4 / 0.5 / 0.5) a least-squares fit on mean-pooled text features reaches a
Non0 Acc-2 of about 0.96, and audio or vision alone about 0.65. ``MSAData.meta["ground_truth"]``
holds the snr per modality, the directions (in the full, permuted column space), the informative
and nuisance columns, and the modalities ranked by snr.

Example:
    >>> data = make_synthetic_msa(n_train=8, n_valid=4, n_test=4, seed=1)
    >>> data.dims(), data.train.text.shape
    ({'text': 64, 'audio': 5, 'vision': 20}, (8, 20, 64))
    >>> data.meta["ground_truth"]["informative_ranking"]
    ['text', 'audio', 'vision']
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinfuse.core.errors import ConfigError, UnknownNameError, suggest
from clinfuse.methods.dib.data import MODALITIES, MSAData, MSASplit, save_mmsa_pickle
from clinfuse.methods.dib.synthetic_hard import synthetic_mosi_hard

__all__ = [
    "SYNTHETIC_PRESETS",
    "make_synthetic_msa",
    "synthetic_mosi",
    "synthetic_mosi_hard",
    "synthetic_sims",
    "write_synthetic",
]

# label range and grid step per kind
_LABELS: dict[str, tuple[float, float, float]] = {
    "mosi": (-3.0, 3.0, 1.0 / 3.0),
    "sims": (-1.0, 1.0, 0.2),
}


def _triple(value: Any, name: str, cast: type) -> tuple[Any, Any, Any]:
    try:
        out = tuple(cast(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be three numbers (text, audio, vision)",
            expected="a 3-tuple",
            found=repr(value),
            fix=f"pass e.g. {name}=(20, 20, 20)",
        ) from exc
    if len(out) != 3:
        raise ConfigError(
            f"{name} must have one entry per modality (text, audio, vision)",
            expected="3 entries",
            found=f"{len(out)}: {value!r}",
            fix=f"pass three values for {name}",
        )
    return out  # type: ignore[return-value]


def _to_grid(values: np.ndarray, kind: str) -> np.ndarray:
    lo, hi, step = _LABELS[kind]
    return np.clip(np.round(values / step) * step, lo, hi).astype(np.float32)


def _modality(
    rng: np.random.Generator,
    y: np.ndarray,
    *,
    t: int,
    perm: np.ndarray,
    k: int,
    w: np.ndarray,
    noise_sd: float,
    n_nuisance: int,
    nuisance_scale: float,
    peak_frac: float,
    peak_gain: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, t, k + n_nuisance)`` (columns permuted by ``perm``) and lengths ``(n,)``."""
    n = y.shape[0]
    lengths = rng.integers(math.ceil(t / 2), t + 1, size=n)
    valid = np.arange(t)[None, :] < lengths[:, None]  # (n, t)
    gain = np.where(rng.random((n, t)) < peak_frac, peak_gain, 1.0) * valid
    gain *= lengths[:, None] / gain.sum(axis=1, keepdims=True)  # mean over valid frames = 1
    sample_noise = rng.normal(0.0, noise_sd, size=(n, 1))
    along_w = gain * y[:, None] + sample_noise * valid  # (n, t)
    informative = along_w[:, :, None] * w[None, None, :]
    informative += rng.normal(0.0, noise_sd, size=(n, t, k))
    nuisance = rng.normal(0.0, nuisance_scale, size=(n, 1, n_nuisance)) + rng.normal(
        0.0, nuisance_scale, size=(n, t, n_nuisance)
    )
    x = np.concatenate([informative, nuisance], axis=2)[:, :, perm]
    x *= valid[:, :, None]
    return x.astype(np.float32), lengths.astype(np.int64)


def make_synthetic_msa(
    kind: Literal["mosi", "sims"] = "mosi",
    *,
    n_train: int = 1284,
    n_valid: int = 229,
    n_test: int = 686,
    seq_len: tuple[int, int, int] = (20, 20, 20),
    dims: tuple[int, int, int] = (64, 5, 20),
    snr: tuple[float, float, float] = (4.0, 0.5, 0.5),
    nuisance_dims: tuple[int, int, int] = (16, 2, 8),
    nuisance_scale: float = 3.0,
    peak_frac: float = 0.2,
    peak_gain: float = 3.0,
    seed: int | np.random.Generator = 0,
    name: str | None = None,
) -> MSAData:
    """A synthetic MSA data set with a planted signal of known strength per modality.

    See the module docstring for the generative model. Default sizes are MOSI's (1284/229/686);
    the default audio/vision dims are MOSI's MMSA dims (5/20), text is 64-d instead of 768.

    Args:
        kind: ``"mosi"`` (labels in [-3, 3], 1/3 grid) or ``"sims"`` (labels in [-1, 1], 0.2 grid,
            plus per-modality labels ``regression_labels_T|A|V`` = label + N(0, 0.3^2), re-gridded).
        n_train, n_valid, n_test: split sizes.
        seq_len: padded lengths (text, audio, vision).
        dims: total feature dims (text, audio, vision), nuisance columns included.
        snr: amplitude SNR of the mean-pooled projection on the planted direction, per modality.
        nuisance_dims: label-independent high-variance columns per modality (< ``dims``).
        nuisance_scale: standard deviation of the nuisance offset and of the nuisance frame noise.
        peak_frac: fraction of frames that carry the signal ``peak_gain`` times more strongly.
        peak_gain: gain of those frames before the per-sample rescaling.
        seed: an int seed or a ``numpy.random.Generator``.
        name: data set name; default ``f"synthetic_{kind}"``.

    Returns:
        ``MSAData`` with ``source="synthetic:<name>"`` and ``meta["ground_truth"]``.
    """
    if kind not in _LABELS:
        raise ConfigError(
            f"unknown synthetic kind {kind!r}",
            expected=f"one of {sorted(_LABELS)}",
            found=repr(kind),
            fix="use kind='mosi' or kind='sims'",
        )
    seq = _triple(seq_len, "seq_len", int)
    dim = _triple(dims, "dims", int)
    snrs = _triple(snr, "snr", float)
    nuis = _triple(nuisance_dims, "nuisance_dims", int)
    for m, d, q, s, t in zip(MODALITIES, dim, nuis, snrs, seq, strict=True):
        if not (0 <= q < d) or s <= 0 or t < 1:
            raise ConfigError(
                f"bad synthetic settings for {m}",
                expected="0 <= nuisance_dims < dims, snr > 0, seq_len >= 1",
                found=f"dims={d}, nuisance_dims={q}, snr={s}, seq_len={t}",
                fix=f"give {m} at least one informative dim and a positive snr",
            )
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    if min(sizes.values()) < 1:
        raise ConfigError(
            "every split needs at least one sample",
            expected="n_train, n_valid, n_test >= 1",
            found=str(sizes),
            fix="increase the split sizes",
        )
    name = name or f"synthetic_{kind}"
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lo, hi, _ = _LABELS[kind]
    sigma_y = (hi - lo) / math.sqrt(12.0)

    # fixed per-modality structure, shared by all splits
    structure: dict[str, dict[str, Any]] = {}
    for m, d, q, s in zip(MODALITIES, dim, nuis, snrs, strict=True):
        k = d - q
        w = rng.normal(size=k)
        w /= np.linalg.norm(w)
        perm = rng.permutation(d)  # output column j holds source column perm[j]
        w_full = np.zeros(d)
        w_full[np.argsort(perm)[:k]] = w
        structure[m] = {
            "k": k,
            "w": w,
            "w_full": w_full,
            "perm": perm,
            "noise_sd": sigma_y / s,
            "informative": np.sort(np.argsort(perm)[:k]),
            "nuisance": np.sort(np.argsort(perm)[k:]),
        }

    splits: dict[str, MSASplit] = {}
    for split, n in sizes.items():
        y = _to_grid(rng.uniform(lo, hi, n), kind)
        feats: dict[str, np.ndarray] = {}
        lengths: dict[str, np.ndarray] = {}
        for m, t, q in zip(MODALITIES, seq, nuis, strict=True):
            st = structure[m]
            feats[m], lengths[m] = _modality(
                rng,
                y.astype(np.float64),
                t=t,
                perm=st["perm"],
                k=st["k"],
                w=st["w"],
                noise_sd=st["noise_sd"],
                n_nuisance=q,
                nuisance_scale=nuisance_scale,
                peak_frac=peak_frac,
                peak_gain=peak_gain,
            )
        modality_labels: dict[str, np.ndarray] = {}
        if kind == "sims":
            for m in MODALITIES:
                modality_labels[m] = _to_grid(y + rng.normal(0.0, 0.3, n), kind)
        ids = np.empty(n, dtype=object)
        ids[:] = [f"{name}_{split}_{i // 10:04d}$_${i % 10}" for i in range(n)]
        raw_text = np.empty(n, dtype=object)
        raw_text[:] = [f"synthetic utterance {i} ({split})" for i in range(n)]
        splits[split] = MSASplit(
            text=feats["text"],
            audio=feats["audio"],
            vision=feats["vision"],
            labels=y,
            text_lengths=lengths["text"],
            audio_lengths=lengths["audio"],
            vision_lengths=lengths["vision"],
            ids=ids,
            raw_text=raw_text,
            modality_labels=modality_labels,
        )

    ranking = [m for _, m in sorted(zip(snrs, MODALITIES, strict=True), key=lambda p: -p[0])]
    ground_truth = {
        "snr": dict(zip(MODALITIES, snrs, strict=True)),
        "noise_sd": {m: float(structure[m]["noise_sd"]) for m in MODALITIES},
        "label_sd": sigma_y,
        "directions": {m: structure[m]["w_full"].astype(np.float32) for m in MODALITIES},
        "informative_columns": {m: structure[m]["informative"] for m in MODALITIES},
        "nuisance_columns": {m: structure[m]["nuisance"] for m in MODALITIES},
        "informative_ranking": ranking,
    }
    meta = {
        "layout": "mmsa",
        "aligned": False,
        "text_features": True,
        "ground_truth": ground_truth,
        "generator": {
            "kind": kind,
            "seq_len": seq,
            "dims": dim,
            "snr": snrs,
            "nuisance_dims": nuis,
            "nuisance_scale": nuisance_scale,
            "peak_frac": peak_frac,
            "peak_gain": peak_gain,
            "seed": seed if isinstance(seed, int) else None,
        },
    }
    return MSAData(
        splits=splits, name=name, dataset_kind=kind, source=f"synthetic:{name}", meta=meta
    )


def synthetic_mosi(**overrides: Any) -> MSAData:
    """MOSI-like synthetic data: MOSI split sizes, labels in [-3, 3], dims (64, 5, 20).

    Keyword arguments override :func:`make_synthetic_msa`'s defaults.
    """
    kwargs: dict[str, Any] = {"name": "synthetic_mosi"}
    kwargs.update(overrides)
    return make_synthetic_msa("mosi", **kwargs)


def synthetic_sims(**overrides: Any) -> MSAData:
    """SIMS-like synthetic data: 1368/456/457 samples, labels in [-1, 1] with T/A/V labels.

    Audio is 33-d as in SIMS; vision is 40-d instead of SIMS's 709 (OpenFace) and text 64-d
    instead of 768, to keep tests fast. Keyword arguments override these defaults.
    """
    kwargs: dict[str, Any] = {
        "n_train": 1368,
        "n_valid": 456,
        "n_test": 457,
        "dims": (64, 33, 40),
        "nuisance_dims": (16, 8, 10),
        "name": "synthetic_sims",
    }
    kwargs.update(overrides)
    return make_synthetic_msa("sims", **kwargs)


SYNTHETIC_PRESETS: dict[str, Callable[..., MSAData]] = {
    "synthetic_mosi": synthetic_mosi,
    "synthetic_sims": synthetic_sims,
    "synthetic_mosi_hard": synthetic_mosi_hard,
}
"""Preset name -> generator; each accepts its generator's keyword overrides
(:func:`make_synthetic_msa`, or :func:`.synthetic_hard.synthetic_mosi_hard`)."""


def write_synthetic(name: str, path: str | os.PathLike[str], **overrides: Any) -> Path:
    """Generate preset ``name`` and write it as an MMSA (unaligned-style) pickle, atomically.

    Example:
        >>> import tempfile
        >>> from clinfuse.methods.dib.data import load_msa
        >>> d = tempfile.mkdtemp()
        >>> p = write_synthetic("synthetic_sims", f"{d}/sims.pkl", n_train=6, n_valid=3, n_test=3)
        >>> load_msa(p).dataset_kind
        'sims'
    """
    if name not in SYNTHETIC_PRESETS:
        raise UnknownNameError(
            f"unknown synthetic preset {name!r}",
            expected=f"one of: {', '.join(SYNTHETIC_PRESETS)}",
            found=repr(name),
            fix=suggest(name, SYNTHETIC_PRESETS, "use one of the known names", cutoff=0.6),
        )
    data = SYNTHETIC_PRESETS[name](**overrides)
    return save_mmsa_pickle(data, path)
