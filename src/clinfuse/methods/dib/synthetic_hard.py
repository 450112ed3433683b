r"""A synthetic MSA set where fusion and temporal modelling are needed, with a Bayes oracle.

``synthetic_mosi`` plants a linear, additive signal: a ridge regression on mean-pooled features is
near-optimal there. This generator plants a label that no mean-pooled or late-fusion model can
read, in the same MMSA schema (labels on MOSI's 1/3 grid in [-3, 3], never 0):

* sentiment :math:`y_i = s_i m_i`, sign :math:`s_i = \pm 1` (equiprobable), magnitude
  :math:`m_i` uniform on :math:`\{1/3, 2/3, \dots, 3\}`;
* a flip :math:`c_i = -1` (else :math:`+1`) with probability ``flip_rate[0]`` for negative and
  ``flip_rate[1]`` for positive sentiment (sarcasm, positive words said with a negative
  intent, is the common case); the words say the *literal* polarity :math:`t_i = s_i c_i`, so
  text alone gets the sign wrong whenever :math:`c_i = -1` (cross-modal interaction:
  :math:`\mathrm{sign}\, y = t \cdot c`). The asymmetry gives the flip cue a marginal
  correlation with the label, so gradient training can find it (a symmetric flip is a parity
  problem);
* text: every valid frame is :math:`t_i m_i \gamma_t\, w_t + \epsilon`, with
  :math:`\epsilon \sim N(0, \sigma_t^2 I)` on the informative columns (``text_snr`` =
  :math:`\gamma_t/\sigma_t`);
* audio and vision reveal :math:`c_i` only through temporal order: in one random window of
  ``cue_len`` adjacent valid frames the informative columns hold :math:`+c_i a_m w_m` in the first
  half and :math:`-c_i a_m w_m` in the second, elsewhere only noise :math:`N(0, \sigma_m^2 I)`
  (``cue_snr`` = :math:`a_m/\sigma_m`). The pattern sums to zero over time, and any
  permutation-invariant pooling (mean, std, max, min) of the frames is the same for
  :math:`c = +1` and :math:`c = -1`: only a model that reads frame order sees the flip. Audio
  and vision carry the same :math:`c_i` with independent noise (redundancy: one may be lost);
* a *tone*: on ``tone_dims`` further columns, every valid audio and vision frame holds
  :math:`s_i \tau_m v_m` plus noise :math:`N(0, \sigma_m^2 I)` (``tone_snr`` =
  :math:`\tau_m/\sigma_m`), the true sign read additively, as prosody and facial expression
  are in MOSI. Mean pooling reads it, so linear pooled models use audio and vision too; it is
  redundant with text and cue for the oracle (text and cue give :math:`s = t c`), which leans on
  it only where the text is weak. Noise on audio and vision therefore costs a model that leans on
  the tone more than one that reads text and cue;
* nuisance columns in every modality carry a factor shared across modalities, per sample
  :math:`u_i \sim N(0, 1)` and per frame :math:`r_{it} \sim N(0, 1)`, with fixed loadings, plus
  independent noise, all scaled by ``nuisance_scale``; they are independent of the label;
* columns are shuffled by a fixed permutation per modality; valid lengths are uniform in
  :math:`[\lceil T/2 \rceil, T]`, padding is zero.

The Bayes posterior :math:`P(y > 0 \mid x)` is exact (:func:`hard_posterior`): the text evidence
is a mixture over magnitudes, the audio/vision cue evidence a mixture over window positions, the
tone a Gaussian likelihood ratio in :math:`s`, and the likelihoods are combined with the joint
prior of :math:`(t, c)`. It accepts extra per-column
Gaussian noise (test-time corruption with known std) and treats all-zero frames as missing, so
the oracle is also available under corruption. ``meta["ground_truth"]["bayes_acc"]`` holds the
clean Bayes accuracy (expected, :math:`\mathrm{mean}_i \max(p_i, 1 - p_i)`) of each split.

Example:
    >>> data = synthetic_mosi_hard(n_train=40, n_valid=20, n_test=20, seed=1)
    >>> data.dims(), sorted({round(float(v), 2) for v in np.abs(data.train.labels)})[:2]
    ({'text': 32, 'audio': 12, 'vision': 16}, [0.33, 0.67])
    >>> p = hard_posterior(data.test, data.meta["ground_truth"])
    >>> p.shape, bool(((p >= 0) & (p <= 1)).all())
    ((20,), True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from clinfuse.core.errors import ConfigError
from clinfuse.methods.dib.data import MODALITIES, MSAData, MSASplit

__all__ = ["hard_bayes_accuracy", "hard_posterior", "synthetic_mosi_hard"]

_MAGNITUDES = np.arange(1, 10, dtype=np.float64) / 3.0
_CUE_MODALITIES = ("audio", "vision")


def _pattern(width: int) -> np.ndarray:
    """The cue's frame signs: ``+1`` for the first half of the window, ``-1`` for the second."""
    return np.repeat([1.0, -1.0], width // 2)


def _check(cond: bool, msg: str, found: object, fix: str) -> None:
    if not cond:
        raise ConfigError(msg, expected="see synthetic_mosi_hard's docstring", found=found, fix=fix)


def _structure(rng: np.random.Generator, d: int, q: int, r: int = 0) -> dict[str, np.ndarray]:
    """Planted directions, nuisance loadings and column permutation of one modality.

    Source columns: ``k = d - q - r`` informative (cue or text) columns, ``r`` tone columns, then
    ``q`` nuisance columns; the permutation shuffles them.
    """
    k = d - q - r
    w = rng.normal(size=k)
    w /= np.linalg.norm(w)
    loadings = rng.normal(size=(2, q))  # shared per-sample and per-frame factor
    perm = rng.permutation(d)  # output column j holds source column perm[j]
    inv = np.argsort(perm)
    w_full = np.zeros(d)
    w_full[inv[:k]] = w
    out = {"w": w, "w_full": w_full, "loadings": loadings, "perm": perm, "k": np.int64(k)}
    out["r"] = np.int64(r)
    if r:
        v = rng.normal(size=r)
        v /= np.linalg.norm(v)
        v_full = np.zeros(d)
        v_full[inv[k : k + r]] = v
        out.update(v=v, v_full=v_full)
    return out


def _frames(
    rng: np.random.Generator,
    n: int,
    t: int,
    st: Mapping[str, Any],
    along_w: np.ndarray,
    noise_sd: float,
    shared: tuple[np.ndarray, np.ndarray],
    nuisance_scale: float,
    lengths: np.ndarray,
    along_v: np.ndarray | None = None,
) -> np.ndarray:
    """Features ``(n, t, d)``: signal ``along_w (n, t)`` times w (and ``along_v`` times the tone
    direction v), noise, nuisance, padding."""
    k, q, r_dims = int(st["k"]), st["loadings"].shape[1], int(st["r"])
    informative = along_w[:, :, None] * st["w"][None, None, :]
    informative += rng.normal(0.0, noise_sd, size=(n, t, k))
    blocks = [informative]
    if r_dims:
        tone = along_v[:, :, None] * st["v"][None, None, :]  # type: ignore[index]
        blocks.append(tone + rng.normal(0.0, noise_sd, size=(n, t, r_dims)))
    u, r = shared  # (n, 1), (n, t_max)
    factor = u[:, :, None] * st["loadings"][0] + r[:, :t, None] * st["loadings"][1]
    nuisance = nuisance_scale * (factor + rng.normal(size=(n, t, q)))
    blocks.append(nuisance)
    x = np.concatenate(blocks, axis=2)[:, :, st["perm"]]
    x *= (np.arange(t)[None, :] < lengths[:, None])[:, :, None]
    return x.astype(np.float32)


def _split(
    rng: np.random.Generator,
    n: int,
    name: str,
    split: str,
    seq: tuple[int, int, int],
    structure: Mapping[str, Mapping[str, Any]],
    gt: Mapping[str, Any],
    nuisance_scale: float,
) -> MSASplit:
    s = rng.choice([-1.0, 1.0], size=n)
    m = rng.choice(_MAGNITUDES, size=n)
    q_neg, q_pos = gt["flip_rate"]
    c = np.where(rng.random(n) < np.where(s > 0, q_pos, q_neg), -1.0, 1.0)
    y = (s * m).astype(np.float32)
    t_max = max(seq)
    shared = (rng.normal(size=(n, 1)), rng.normal(size=(n, t_max)))
    feats, lengths = {}, {}
    for mod, t in zip(MODALITIES, seq, strict=True):
        lengths[mod] = rng.integers(math.ceil(t / 2), t + 1, size=n).astype(np.int64)
        valid = np.arange(t)[None, :] < lengths[mod][:, None]
        tone = None
        if mod == "text":
            along = (s * c * m * gt["gamma"]["text"])[:, None] * valid
        else:
            if gt["tone_gamma"].get(mod):
                tone = (s * gt["tone_gamma"][mod])[:, None] * valid
            along = np.zeros((n, t))
            start = rng.integers(0, lengths[mod] - gt["cue_len"] + 1)  # window inside
            rows = np.arange(n)
            for k, sign in enumerate(_pattern(gt["cue_len"])):
                along[rows, start + k] = sign * c * gt["gamma"][mod]
        feats[mod] = _frames(
            rng,
            n,
            t,
            structure[mod],
            along,
            gt["noise_sd"][mod],
            shared,
            nuisance_scale,
            lengths[mod],
            tone,
        )
    ids = np.empty(n, dtype=object)
    ids[:] = [f"{name}_{split}_{i // 10:04d}$_${i % 10}" for i in range(n)]
    raw_text = np.empty(n, dtype=object)
    raw_text[:] = [f"synthetic utterance {i} ({split})" for i in range(n)]
    return MSASplit(
        text=feats["text"],
        audio=feats["audio"],
        vision=feats["vision"],
        labels=y,
        text_lengths=lengths["text"],
        audio_lengths=lengths["audio"],
        vision_lengths=lengths["vision"],
        ids=ids,
        raw_text=raw_text,
        extra={"flip": c.astype(np.float32)},
    )


def synthetic_mosi_hard(
    *,
    n_train: int = 1200,
    n_valid: int = 300,
    n_test: int = 800,
    seq_len: tuple[int, int, int] = (8, 10, 10),
    dims: tuple[int, int, int] = (32, 12, 16),
    nuisance_dims: tuple[int, int, int] = (8, 4, 6),
    text_snr: float = 1.0,
    cue_snr: tuple[float, float] = (6.0, 6.0),
    cue_len: int = 4,
    flip_rate: tuple[float, float] = (0.5, 0.1),
    nuisance_scale: float = 1.0,
    tone_dims: tuple[int, int] = (2, 2),
    tone_snr: tuple[float, float] = (0.3, 0.3),
    seed: int | np.random.Generator = 0,
    name: str = "synthetic_mosi_hard",
) -> MSAData:
    """MOSI-schema data whose label needs cross-modal, temporal fusion (see the module docstring).

    Args:
        n_train, n_valid, n_test: split sizes.
        seq_len: padded lengths (text, audio, vision); audio and vision need at least 2 frames.
        dims: feature dims (text, audio, vision), nuisance columns included.
        nuisance_dims: label-independent columns per modality (< ``dims``).
        text_snr: :math:`\\gamma_t/\\sigma_t` of one text frame for magnitude 1.
        cue_snr: :math:`a_m/\\sigma_m` of the audio and vision cue frames.
        flip_rate: probability that the words say the opposite of the sentiment, for
            negative and for positive sentiment.
        nuisance_scale: scale of the shared and independent nuisance.
        tone_dims: tone columns of audio and vision (taken from the informative ones).
        tone_snr: per-frame :math:`\\tau_m/\\sigma_m` of the tone :math:`s_i \\tau_m v_m` that
            every valid audio/vision frame carries (0: no tone, the original design).
        seed: an int seed or a ``numpy.random.Generator``.
        name: data set name.

    Returns:
        ``MSAData`` (kind ``mosi``) with ``meta["ground_truth"]`` holding the planted parameters
        and ``bayes_acc`` per split; each split's ``extra["flip"]`` holds :math:`c_i`.
    """
    seq = tuple(int(v) for v in seq_len)
    dim = tuple(int(v) for v in dims)
    nuis = tuple(int(v) for v in nuisance_dims)
    _check(
        len(seq) == len(dim) == len(nuis) == 3 and len(tuple(cue_snr)) == 2,
        "seq_len, dims and nuisance_dims need 3 entries, cue_snr 2",
        f"seq_len={seq_len}, dims={dims}, nuisance_dims={nuisance_dims}, cue_snr={cue_snr}",
        "pass (text, audio, vision) triples and an (audio, vision) pair",
    )
    _check(
        all(0 <= q < d for q, d in zip(nuis, dim, strict=True)) and seq[0] >= 1,
        "every modality needs an informative column and text a frame",
        f"dims={dim}, nuisance_dims={nuis}, seq_len={seq}",
        "keep nuisance_dims < dims",
    )
    _check(
        cue_len >= 2 and cue_len % 2 == 0 and math.ceil(min(seq[1:]) / 2) >= cue_len,
        "the cue needs an even length >= 2 that fits in the shortest audio/vision sequence",
        f"cue_len={cue_len}, seq_len={seq}",
        "cue_len=4 with seq_len >= 8 for audio and vision",
    )
    rates = tuple(float(v) for v in flip_rate)
    _check(
        len(rates) == 2
        and all(0.0 <= v < 0.5 or (v == 0.5 and i == 0) for i, v in enumerate(rates)),
        "flip_rate must be two probabilities (negative <= 0.5, positive < 0.5)",
        flip_rate,
        "e.g. flip_rate=(0.5, 0.1)",
    )
    _check(
        text_snr > 0 and min(cue_snr) > 0 and nuisance_scale >= 0,
        "snrs must be positive and nuisance_scale non-negative",
        f"text_snr={text_snr}, cue_snr={cue_snr}, nuisance_scale={nuisance_scale}",
        "e.g. text_snr=0.6, cue_snr=(3, 3)",
    )
    _check(
        len(tuple(tone_dims)) == len(tuple(tone_snr)) == 2
        and min(tone_snr) >= 0
        and min(tone_dims) >= 0
        and all(
            d - q - (r if g > 0 else 0) >= 1
            for d, q, r, g in zip(dim[1:], nuis[1:], tone_dims, tone_snr, strict=True)
        )
        and all(r >= 1 for r, g in zip(tone_dims, tone_snr, strict=True) if g > 0),
        "tone_dims and tone_snr are (audio, vision) pairs; a tone needs a column and must leave "
        "a cue column",
        f"tone_dims={tone_dims}, tone_snr={tone_snr}, dims={dim}, nuisance_dims={nuis}",
        "e.g. tone_dims=(2, 2), tone_snr=(0.25, 0.25), with dims - nuisance_dims > 2",
    )
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    _check(min(sizes.values()) >= 1, "every split needs a sample", sizes, "increase the sizes")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    tones = (0, *(int(v) if float(g) > 0 else 0 for v, g in zip(tone_dims, tone_snr, strict=True)))
    structure = {
        mod: _structure(rng, d, q, r)
        for mod, d, q, r in zip(MODALITIES, dim, nuis, tones, strict=True)
    }
    snr = {"text": float(text_snr), "audio": float(cue_snr[0]), "vision": float(cue_snr[1])}
    gt: dict[str, Any] = {
        "flip_rate": rates,
        "magnitudes": _MAGNITUDES.tolist(),
        "gamma": dict.fromkeys(MODALITIES, 1.0),
        "noise_sd": {mod: 1.0 / snr[mod] for mod in MODALITIES},
        "snr": snr,
        "directions": {mod: structure[mod]["w_full"].astype(np.float32) for mod in MODALITIES},
        "informative_columns": {
            mod: np.sort(np.argsort(structure[mod]["perm"])[: int(structure[mod]["k"])])
            for mod in MODALITIES
        },
        "cue_modalities": list(_CUE_MODALITIES),
        "cue_len": int(cue_len),
        # tone: every valid audio/vision frame holds s * tone_gamma along v on its tone columns
        "tone_gamma": {
            mod: float(g) / snr[mod] if r else 0.0
            for mod, g, r in zip(_CUE_MODALITIES, tone_snr, tones[1:], strict=True)
        },
        "tone_directions": {
            mod: structure[mod]["v_full"].astype(np.float32)
            for mod in _CUE_MODALITIES
            if int(structure[mod]["r"])
        },
        "tone_columns": {
            mod: np.sort(
                np.argsort(structure[mod]["perm"])[
                    int(structure[mod]["k"]) : int(structure[mod]["k"] + structure[mod]["r"])
                ]
            )
            for mod in _CUE_MODALITIES
            if int(structure[mod]["r"])
        },
    }
    splits = {
        split: _split(rng, n, name, split, seq, structure, gt, nuisance_scale)
        for split, n in sizes.items()
    }
    gt["bayes_acc"] = {split: hard_bayes_accuracy(sp, gt) for split, sp in splits.items()}
    meta = {
        "layout": "mmsa",
        "aligned": False,
        "text_features": True,
        "ground_truth": gt,
        "generator": {
            "kind": "mosi_hard",
            "seq_len": seq,
            "dims": dim,
            "nuisance_dims": nuis,
            "text_snr": float(text_snr),
            "cue_snr": tuple(float(v) for v in cue_snr),
            "cue_len": int(cue_len),
            "flip_rate": rates,
            "nuisance_scale": float(nuisance_scale),
            "tone_dims": tuple(int(v) for v in tone_dims),
            "tone_snr": tuple(float(v) for v in tone_snr),
            "seed": seed if isinstance(seed, int) else None,
        },
    }
    return MSAData(
        splits=splits, name=name, dataset_kind="mosi", source=f"synthetic:{name}", meta=meta
    )


# --- the Bayes oracle ---------------------------------------------------------------------------


def _observed(x: np.ndarray, length: np.ndarray) -> np.ndarray:
    """``(n, t)`` frames that are valid and not all-zero (a zeroed frame counts as missing)."""
    valid = np.arange(x.shape[1])[None, :] < length[:, None]
    return valid & np.any(x != 0, axis=2)


def _projection(
    x: np.ndarray, gt: Mapping[str, Any], mod: str, extra_std: Mapping[str, np.ndarray] | None
) -> tuple[np.ndarray, float]:
    """Whitened projection :math:`\\sum_j w_j x_{tj} / v_j` ``(n, t)`` and its norm.

    :math:`\\sum_j w_j^2/v_j`, with :math:`v_j` the frame-noise variance of column :math:`j` plus
    the added noise's.
    """
    cols = gt["informative_columns"][mod]
    w = np.asarray(gt["directions"][mod], dtype=np.float64)[cols]
    var = np.full(len(cols), gt["noise_sd"][mod] ** 2)
    if extra_std is not None and mod in extra_std:
        var = var + np.asarray(extra_std[mod], dtype=np.float64)[cols] ** 2
    proj = x[:, :, cols].astype(np.float64) @ (w / var)
    return proj, float(np.sum(w**2 / var))


def _logaddexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=1, keepdims=True)))[:, 0]


def _text_log_odds(split: MSASplit, gt: Mapping[str, Any], extra_std: Any) -> np.ndarray:
    """:math:`\\log P(t=+1 \\mid x_{text}) - \\log P(t=-1 \\mid x_{text})` per sample."""
    proj, norm = _projection(split.text, gt, "text", extra_std)
    obs = _observed(split.text, split.text_lengths)
    total = (proj * obs).sum(1)[:, None]  # (n, 1)
    count = obs.sum(1)[:, None]
    mu = np.asarray(gt["magnitudes"])[None, :] * gt["gamma"]["text"]  # (1, M)
    quad = -0.5 * count * mu**2 * norm
    return _logaddexp_rows(mu * total + quad) - _logaddexp_rows(-mu * total + quad)


def _cue_log_odds(
    x: np.ndarray, length: np.ndarray, gt: Mapping[str, Any], mod: str, extra_std: Any
) -> np.ndarray:
    """:math:`\\log p(x_m \\mid c=+1) - \\log p(x_m \\mid c=-1)`, mixed over window positions."""
    proj, norm = _projection(x, gt, mod, extra_std)
    obs = _observed(x, length)
    a = gt["gamma"][mod]
    n, t = proj.shape
    width = gt["cue_len"]
    starts = np.arange(t - width + 1)
    possible = starts[None, :] < (length[:, None] - width + 1)  # window inside the valid frames
    lin = np.zeros((n, len(starts)))
    quad = np.zeros((n, len(starts)))
    for k, sign in enumerate(_pattern(width)):
        frames = slice(k, k + len(starts))
        lin += sign * obs[:, frames] * proj[:, frames]
        quad += -0.5 * a**2 * norm * obs[:, frames]
    plus = np.where(possible, a * lin + quad, -np.inf)
    minus = np.where(possible, -a * lin + quad, -np.inf)
    return _logaddexp_rows(plus) - _logaddexp_rows(minus)


def _tone_log_odds(
    x: np.ndarray, length: np.ndarray, gt: Mapping[str, Any], mod: str, extra_std: Any
) -> np.ndarray:
    """:math:`\\log p(x_m \\mid s=+1) - \\log p(x_m \\mid s=-1)` of the tone columns (0: none)."""
    if mod not in gt.get("tone_columns", {}):
        return np.zeros(x.shape[0])
    cols = gt["tone_columns"][mod]
    v = np.asarray(gt["tone_directions"][mod], dtype=np.float64)[cols]
    var = np.full(len(cols), gt["noise_sd"][mod] ** 2)
    if extra_std is not None and mod in extra_std:
        var = var + np.asarray(extra_std[mod], dtype=np.float64)[cols] ** 2
    proj = x[:, :, cols].astype(np.float64) @ (v / var)
    obs = _observed(x, length)
    return 2.0 * gt["tone_gamma"][mod] * (proj * obs).sum(1)


def hard_posterior(
    split: MSASplit,
    ground_truth: Mapping[str, Any],
    extra_std: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    r"""Exact Bayes posterior :math:`P(y_i > 0 \mid x_i)` under the planted model, ``(n,)``.

    :math:`\mathrm{sign}\, y = t c`; text observes :math:`t`, the audio/vision cue columns
    :math:`c` and their tone columns :math:`s = t c`, through disjoint features with independent
    noise, so :math:`P(t, c \mid x) \propto P(t, c)\, p(x_{text} \mid t)\,
    p(x^{cue}_{a,v} \mid c)\, p(x^{tone}_{a,v} \mid tc)` with the planted prior
    :math:`P(t{=}sc, c) = \frac12 P(c \mid s)`.

    Args:
        split: a split of :func:`synthetic_mosi_hard` (possibly corrupted).
        ground_truth: ``data.meta["ground_truth"]``.
        extra_std: per-modality ``(d,)`` std of added Gaussian noise (e.g. rho x train std);
            all-zero frames are treated as missing.
    """
    gt = ground_truth
    text = _text_log_odds(split, gt, extra_std)  # log p(x|t=+1) - log p(x|t=-1)
    cue = sum(
        _cue_log_odds(split.features()[mod], split.lengths()[mod], gt, mod, extra_std)
        for mod in gt["cue_modalities"]
    )
    tone = sum(
        _tone_log_odds(split.features()[mod], split.lengths()[mod], gt, mod, extra_std)
        for mod in gt["cue_modalities"]
    )
    q_neg, q_pos = gt["flip_rate"]
    # joint prior of (t, c): s = t * c; c = -1 with P(flip | s)
    prior = {(1, 1): 0.5 * (1 - q_pos), (-1, 1): 0.5 * (1 - q_neg), (1, -1): 0.5 * q_neg,
             (-1, -1): 0.5 * q_pos}  # fmt: skip
    log_joint = {
        (t, c): np.log(max(p, 1e-300)) + 0.5 * t * text + 0.5 * c * cue + 0.5 * t * c * tone
        for (t, c), p in prior.items()
    }
    pos = np.logaddexp(log_joint[(1, 1)], log_joint[(-1, -1)])
    neg = np.logaddexp(log_joint[(-1, 1)], log_joint[(1, -1)])
    return 1.0 / (1.0 + np.exp(-np.clip(pos - neg, -50, 50)))


def hard_bayes_accuracy(
    split: MSASplit,
    ground_truth: Mapping[str, Any],
    extra_std: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Bayes accuracy of the sign of y.

    ``expected``: mean of :math:`\\max(p_i, 1 - p_i)`; ``empirical``: the Bayes rule against y.
    """
    p = hard_posterior(split, ground_truth, extra_std)
    return {
        "expected": float(np.maximum(p, 1.0 - p).mean()),
        "empirical": float(((p > 0.5) == (split.labels > 0)).mean()),
    }
