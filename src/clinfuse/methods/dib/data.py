"""Multimodal sentiment (MSA) data for DIB: MMSA and MAG-BERT/MIB pickles, validated, as arrays.

Two on-disk layouts are read, both through :func:`clinfuse.core.safe_pickle.safe_load`, so a
downloaded file can hold arrays and builtins only:

* **MMSA** (``MOSI|MOSEI/Processed/{aligned,unaligned}_50.pkl``,
  ``SIMS/Processed/unaligned_39.pkl``): a dict keyed ``train|valid|test``; each split a dict
  with ``text (N,L,768)`` (BERT features),
  ``text_bert (N,3,L)`` (input ids, attention mask, segment ids), ``audio (N,Ta,da)``,
  ``vision (N,Tv,dv)``, ``audio_lengths``/``vision_lengths`` (unaligned files only),
  ``regression_labels (N,)``, ``raw_text``/``id`` (numpy object arrays of ``str``), ``annotations``,
  ``classification_labels`` and, for SIMS, ``regression_labels_T|A|V``.
* **MAG-BERT/MIB** (``datasets/mosi.pkl``): keys ``train|dev|test``, each a list of
  ``((words, visual (T,dv), acoustic (T,da)), label (1,1), segment)``. These files carry no text
  *features*: the words are kept in ``raw_text`` (and ``extra["words"]``) and ``text`` is a
  ``(N,L,1)`` word-position indicator, so the model must use the BERT text encoder
  (``meta["text_features"]`` is ``False``).

Everything is checked before use and the file is never modified: missing splits or keys,
per-split sample counts, ``ndim``, feature dims across splits and against the dims a config
expects, and labels (NaN, or outside the range of the data set kind). Non-finite features
(MOSEI's COVAREP audio holds ``-inf``) are replaced by 0, with a logged count, as MMSA does.

Lengths (the number of valid, left-aligned frames per sample):

* text: ``text_bert[:, 1, :].sum(-1)`` (the attention mask) when ``text_bert`` is present,
  otherwise the number of frames that are not all zero; at least 1.
* audio/vision: ``audio_lengths``/``vision_lengths`` when present (unaligned files), otherwise
  the full padded length (aligned files), clipped to ``[1, T]``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from clinfuse.core.errors import DataError
from clinfuse.core.safe_pickle import safe_load

__all__ = [
    "DatasetKind",
    "KNOWN_SHA256",
    "LABEL_RANGES",
    "MODALITIES",
    "SPLITS",
    "MSAData",
    "MSADataset",
    "MSASplit",
    "load_magbert_pickle",
    "load_mmsa_pickle",
    "load_msa",
    "save_mmsa_pickle",
    "sha256_file",
]

logger = logging.getLogger(__name__)

DatasetKind = Literal["mosi", "mosei", "sims", "mvsa"]
"""Which metric family applies: MOSI/MOSEI regression in [-3, 3], SIMS in [-1, 1], MVSA classes."""

Modality = Literal["text", "audio", "vision"]
MODALITIES: tuple[Modality, ...] = ("text", "audio", "vision")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

LABEL_RANGES: dict[str, tuple[float, float]] = {
    "mosi": (-3.0, 3.0),
    "mosei": (-3.0, 3.0),
    "sims": (-1.0, 1.0),
    "mvsa": (0.0, 2.0),  # 3 classes coded 0, 1, 2 [inferred: no MVSA loader exists yet]
}
"""Closed label range per data set kind; labels outside it (beyond ``LABEL_TOL``) are an error."""

LABEL_TOL = 1e-4
_MMSA_FIX = "check that the file is an MMSA feature pickle"
_MAGBERT_FIX = "check that the file is a MAG-BERT/MIB pickle"
"""Float tolerance on the label range (labels are means of annotator scores, stored as float32)."""

KNOWN_SHA256: dict[str, str] = {}
"""Published SHA-256 digests, keyed like ``"MOSI/Processed/aligned_50.pkl"``.

Deliberately EMPTY: the MMSA README lists checksums, but we have not verified them, and a made-up
digest would reject good files. Fill it from the MMSA README, then pass
``expected_sha256=KNOWN_SHA256[key]`` to :func:`load_msa`.
"""

_SIMS_MODALITY_KEYS: dict[Modality, tuple[str, ...]] = {
    # ``regression_labels_labels_X`` is the spelling MMSA's own data_loader reads; accept both.
    "text": ("regression_labels_T", "regression_labels_labels_T"),
    "audio": ("regression_labels_A", "regression_labels_labels_A"),
    "vision": ("regression_labels_V", "regression_labels_labels_V"),
}
_MMSA_REQUIRED = ("text", "audio", "vision", "regression_labels")
_MMSA_KNOWN = {
    "text",
    "audio",
    "vision",
    "regression_labels",
    "text_bert",
    "audio_lengths",
    "vision_lengths",
    "raw_text",
    "id",
} | {k for keys in _SIMS_MODALITY_KEYS.values() for k in keys}
_KIND_TOKEN = re.compile(r"(?<![a-z])(mosei|mosi|sims|mvsa)(?![a-z])")


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------
@dataclass
class MSASplit:
    """One split (train, valid or test) of an MSA data set, as validated numpy arrays.

    Feature arrays are right-padded with zeros; ``*_lengths`` give the valid frames per sample.
    """

    text: np.ndarray
    """``(N, L, d_t)`` float32 text features (BERT features in MMSA files)."""
    audio: np.ndarray
    """``(N, T_a, d_a)`` float32 acoustic features."""
    vision: np.ndarray
    """``(N, T_v, d_v)`` float32 visual features."""
    labels: np.ndarray
    """``(N,)`` float32 regression labels (multimodal label ``M``)."""
    text_lengths: np.ndarray
    """``(N,)`` int64 valid text positions, in ``[1, L]``."""
    audio_lengths: np.ndarray
    """``(N,)`` int64 valid audio frames, in ``[1, T_a]``."""
    vision_lengths: np.ndarray
    """``(N,)`` int64 valid visual frames, in ``[1, T_v]``."""
    ids: np.ndarray
    """``(N,)`` object array of ``str`` sample ids (MMSA: ``"video$_$clip"``)."""
    raw_text: np.ndarray | None = None
    """``(N,)`` object array of ``str`` transcripts, when the file has them."""
    text_bert: np.ndarray | None = None
    """``(N, 3, L)`` int64 BERT input ids, attention mask and segment ids, when present."""
    modality_labels: dict[str, np.ndarray] = field(default_factory=dict)
    """Per-modality ``(N,)`` float32 labels keyed by modality (SIMS ``regression_labels_T|A|V``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other per-split entries of the file, passed through untouched (``annotations``, ...)."""

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.labels.shape[0])

    def features(self) -> dict[str, np.ndarray]:
        """Modality name (``text``, ``audio``, ``vision``) -> feature array."""
        return {"text": self.text, "audio": self.audio, "vision": self.vision}

    def lengths(self) -> dict[str, np.ndarray]:
        """Modality name -> ``(N,)`` int64 valid lengths."""
        return {
            "text": self.text_lengths,
            "audio": self.audio_lengths,
            "vision": self.vision_lengths,
        }

    def with_features(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Mapping[str, np.ndarray] | None = None,
    ) -> MSASplit:
        """A copy with some feature (and optionally length) arrays replaced.

        Used to apply test-time corruptions; the replaced arrays must keep their shapes.
        Arrays not named are shared with ``self`` (numpy arrays are not copied).

        Example:
            >>> z = np.zeros((2, 5, 1), np.float32)
            >>> s = MSASplit(np.zeros((2, 3, 4), np.float32), z, z, np.zeros(2, np.float32),
            ...              np.full(2, 3), np.full(2, 5), np.full(2, 5), np.array(["a", "b"]))
            >>> float(s.with_features({"audio": np.ones((2, 5, 1), np.float32)}).audio.sum())
            10.0
        """
        updates: dict[str, Any] = {}
        for kind, new in (("features", features), ("lengths", lengths or {})):
            current = self.features() if kind == "features" else self.lengths()
            for name, arr in new.items():
                if name not in current:
                    raise DataError(
                        f"unknown modality {name!r} in with_features({kind})",
                        expected=f"one of {list(MODALITIES)}",
                        found=repr(name),
                        fix="use the modality names text, audio, vision",
                    )
                arr = np.asarray(arr)
                if arr.shape != current[name].shape:
                    raise DataError(
                        f"replacement {kind} for {name!r} change the shape",
                        expected=str(current[name].shape),
                        found=str(arr.shape),
                        fix="corruptions must keep the array shape; mask or zero frames instead",
                    )
                dtype = np.float32 if kind == "features" else np.int64
                key = name if kind == "features" else f"{name}_lengths"
                updates[key] = arr.astype(dtype, copy=False)
        return replace(self, **updates)


@dataclass
class MSAData:
    """A multimodal sentiment data set: ``train``/``valid``/``test`` splits plus provenance."""

    splits: dict[str, MSASplit]
    """``"train"``, ``"valid"``, ``"test"`` -> split."""
    name: str
    """Short name, e.g. ``"mosi_aligned_50"`` or ``"synthetic_mosi"``."""
    dataset_kind: DatasetKind
    """Metric family: ``mosi``/``mosei`` labels in [-3, 3], ``sims`` in [-1, 1], ``mvsa``."""
    source: str
    """The file it was read from, or ``"synthetic:<name>"``."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Layout facts (``layout``, ``aligned``, ``text_features``) and, for synthetic data, the
    planted ground truth."""

    @property
    def train(self) -> MSASplit:
        """The training split."""
        return self.splits["train"]

    @property
    def valid(self) -> MSASplit:
        """The validation split."""
        return self.splits["valid"]

    @property
    def test(self) -> MSASplit:
        """The test split."""
        return self.splits["test"]

    def dims(self) -> dict[str, int]:
        """Modality -> feature dimension (the same in every split)."""
        return {m: int(a.shape[2]) for m, a in self.train.features().items()}

    def seq_lens(self) -> dict[str, int]:
        """Modality -> padded sequence length of the training split."""
        return {m: int(a.shape[1]) for m, a in self.train.features().items()}


class MSADataset(Dataset):
    """A torch ``Dataset`` over one :class:`MSASplit`; the default collate stacks its items.

    Each item is a dict of tensors: ``text (L,d_t)``, ``audio (T_a,d_a)``, ``vision (T_v,d_v)``
    float32; ``text_lengths``, ``audio_lengths``, ``vision_lengths`` int64 scalars; ``label``
    float32 scalar; ``index`` int64 scalar; plus ``text_bert (3,L)`` int64 when present.
    Tensors share memory with the split's arrays (no copy).
    """

    def __init__(self, split: MSASplit) -> None:
        self.split = split
        self._tensors: dict[str, Tensor] = {
            "text": torch.from_numpy(np.ascontiguousarray(split.text, dtype=np.float32)),
            "audio": torch.from_numpy(np.ascontiguousarray(split.audio, dtype=np.float32)),
            "vision": torch.from_numpy(np.ascontiguousarray(split.vision, dtype=np.float32)),
            "text_lengths": torch.from_numpy(np.asarray(split.text_lengths, dtype=np.int64)),
            "audio_lengths": torch.from_numpy(np.asarray(split.audio_lengths, dtype=np.int64)),
            "vision_lengths": torch.from_numpy(np.asarray(split.vision_lengths, dtype=np.int64)),
            "label": torch.from_numpy(np.asarray(split.labels, dtype=np.float32)),
        }
        if split.text_bert is not None:
            self._tensors["text_bert"] = torch.from_numpy(
                np.ascontiguousarray(split.text_bert, dtype=np.int64)
            )

    def __len__(self) -> int:
        return self.split.n

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {key: t[index] for key, t in self._tensors.items()}
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return item


# ---------------------------------------------------------------------------------------------
# hashing and atomic writes
# ---------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(delete=False) as f:
        ...     _ = f.write(b"abc")
        >>> sha256_file(f.name)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _atomic_pickle(obj: object, path: Path, protocol: int) -> None:
    """Pickle ``obj`` to a temp file next to ``path``, fsync it, then ``os.replace`` it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _array(
    value: Any, *, key: str, split: str, source: str, ndim: int, dtype: type | None
) -> np.ndarray:
    """``value`` as an array of the given ``ndim`` (and dtype), or a DataError naming it."""
    try:
        arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{key!r} in split {split!r} of {source} cannot be read as a numeric array",
            expected=f"a {ndim}-D numeric array",
            found=f"{type(value).__name__} ({exc})",
            fix=_MMSA_FIX,
        ) from exc
    if arr.ndim != ndim:
        raise DataError(
            f"{key!r} in split {split!r} of {source} has the wrong number of dimensions",
            expected=f"{ndim}-D",
            found=f"{arr.ndim}-D, shape {arr.shape}",
            fix="check that the file is an MMSA feature pickle (features are (N, T, d))",
        )
    return arr


def _clean_features(arr: np.ndarray, *, modality: str, split: str) -> np.ndarray:
    """float32 copy-if-needed of ``arr`` with NaN/±inf replaced by 0 (count logged)."""
    try:
        arr = arr.astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{modality} features of split {split!r} are not numeric",
            expected="a float array",
            found=f"dtype {arr.dtype} ({exc})",
            fix=_MMSA_FIX,
        ) from exc
    bad = ~np.isfinite(arr)
    n_bad = int(bad.sum())
    if n_bad:
        if not arr.flags.writeable:
            arr = arr.copy()
        arr[bad] = 0.0
        logger.warning(
            "replaced %d non-finite %s values (-inf/inf/NaN) by 0 in split %r",
            n_bad,
            modality,
            split,
        )
    return arr


def _clip_lengths(lengths: np.ndarray, t: int, *, key: str, split: str) -> np.ndarray:
    out = np.clip(lengths, 1, t).astype(np.int64)
    n_clipped = int((out != lengths).sum())
    if n_clipped:
        logger.warning("clipped %d %s values to [1, %d] in split %r", n_clipped, key, t, split)
    return out


def _text_lengths(text: np.ndarray, text_bert: np.ndarray | None) -> np.ndarray:
    if text_bert is not None:
        lengths = text_bert[:, 1, :].sum(axis=-1)
    else:
        lengths = np.any(text != 0, axis=2).sum(axis=1)
    return np.clip(lengths, 1, text.shape[1]).astype(np.int64)


def _string_array(value: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [str(v) for v in np.asarray(value, dtype=object).reshape(-1)]
    return out


def _check_n(arrays: Mapping[str, Any], *, split: str, source: str) -> int:
    """All per-sample arrays of a split have the same first dimension; return it."""
    sizes = {key: len(value) for key, value in arrays.items() if value is not None}
    n = sizes.get("regression_labels", sizes.get("labels", next(iter(sizes.values()))))
    wrong = {key: size for key, size in sizes.items() if size != n}
    if wrong:
        raise DataError(
            f"split {split!r} of {source}: arrays disagree on the number of samples",
            expected=f"N = {n} for every array (from the labels)",
            found=", ".join(f"{key}: {size}" for key, size in sizes.items()),
            fix="the file is inconsistent; re-create or re-download it",
        )
    return n


def _check_dims(
    splits: Mapping[str, MSASplit],
    *,
    source: str,
    expected_dims: Mapping[str, int | None] | None,
    skip_expected: tuple[str, ...] = (),
) -> None:
    """Feature dims agree across splits, and with the caller's (config's) expected dims."""
    per_split = {
        name: {m: int(a.shape[2]) for m, a in s.features().items()} for name, s in splits.items()
    }
    reference = per_split["train"]
    for name, dims in per_split.items():
        for m in MODALITIES:
            if dims[m] != reference[m]:
                raise DataError(
                    f"{m} feature dim differs between splits of {source}",
                    expected=f"{m} dim {reference[m]} (as in 'train') in every split",
                    found=f"{m} dim {dims[m]} in {name!r}",
                    fix="the splits come from different feature extractions; re-create the file",
                )
    for m, want in (expected_dims or {}).items():
        if m not in reference:
            raise DataError(
                f"unknown modality {m!r} in expected_dims",
                expected=f"keys among {list(MODALITIES)}",
                found=repr(m),
                fix="use text, audio, vision",
            )
        if want is None or m in skip_expected or int(want) == reference[m]:
            continue
        raise DataError(
            f"{m} feature dim mismatch: config says {m}_dim={want}, file has {reference[m]}",
            expected=f"{m}_dim = {want} (from the config)",
            found=f"{m} features of dim {reference[m]} in {source}",
            fix=f"set `--set {m}_dim={reference[m]}` or use the preset that matches this file",
        )


def _infer_kind(splits: Mapping[str, MSASplit], source: str) -> tuple[DatasetKind, str]:
    if any(s.modality_labels for s in splits.values()):
        return "sims", "per-modality labels (regression_labels_T/A/V) are present"
    match = _KIND_TOKEN.search(source.lower().replace("\\", "/"))
    if match:
        return match.group(1), f"the path names {match.group(1)!r}"  # type: ignore[return-value]
    all_labels = np.concatenate([s.labels for s in splits.values()])
    finite = all_labels[np.isfinite(all_labels)]
    if finite.size and np.abs(finite).max() > 1.0 + LABEL_TOL:
        return "mosi", "labels exceed 1 in magnitude"
    return "sims", "all labels lie in [-1, 1]"


def _check_labels(splits: Mapping[str, MSASplit], kind: str, source: str) -> None:
    lo, hi = LABEL_RANGES[kind]
    for name, s in splits.items():
        for label_name, y in [("labels", s.labels), *s.modality_labels.items()]:
            n_nan = int(np.isnan(y).sum())
            if n_nan:
                raise DataError(
                    f"{label_name} of split {name!r} in {source} contain {n_nan} NaN values",
                    expected="finite regression labels",
                    found=f"{n_nan} NaN of {y.size}",
                    fix="drop or repair those samples in a copy of the file (this file was not "
                    "changed)",
                )
            outside = (y < lo - LABEL_TOL) | (y > hi + LABEL_TOL)
            if outside.any():
                fits = [
                    k
                    for k, (a, b) in LABEL_RANGES.items()
                    if a - LABEL_TOL <= y.min() and y.max() <= b + LABEL_TOL
                ]
                hint = "check the file"
                if fits:
                    alternatives = "".join(f" (or {k!r})" for k in fits[1:])
                    hint = f"pass dataset_kind={fits[0]!r}{alternatives}"
                raise DataError(
                    f"{label_name} of split {name!r} in {source} are out of range for "
                    f"dataset_kind {kind!r}",
                    expected=f"labels in [{lo:g}, {hi:g}]",
                    found=f"min {y.min():g}, max {y.max():g} ({int(outside.sum())} outside)",
                    fix=f"{hint}, or check that this is the file you meant",
                )


def _finish(
    splits: dict[str, MSASplit],
    *,
    source: str,
    name: str | None,
    dataset_kind: DatasetKind | None,
    expected_dims: Mapping[str, int | None] | None,
    meta: dict[str, Any],
    skip_expected: tuple[str, ...] = (),
) -> MSAData:
    _check_dims(splits, source=source, expected_dims=expected_dims, skip_expected=skip_expected)
    if dataset_kind is None:
        dataset_kind, reason = _infer_kind(splits, source)
        logger.info("dataset_kind inferred as %r for %s: %s", dataset_kind, source, reason)
    elif dataset_kind not in LABEL_RANGES:
        raise DataError(
            f"unknown dataset_kind {dataset_kind!r}",
            expected=f"one of {list(get_args(DatasetKind))}",
            found=repr(dataset_kind),
            fix="pass one of the known kinds, or None to infer it",
        )
    _check_labels(splits, dataset_kind, source)
    if name is None:
        stem = Path(source).stem
        match = _KIND_TOKEN.search(source.lower())
        name = f"{match.group(1)}_{stem}" if match and match.group(1) not in stem.lower() else stem
    return MSAData(splits=splits, name=name, dataset_kind=dataset_kind, source=source, meta=meta)


# ---------------------------------------------------------------------------------------------
# MMSA layout
# ---------------------------------------------------------------------------------------------
def _missing_split_error(
    source: str, found: list[str], wanted: tuple[str, ...], missing: str
) -> DataError:
    return DataError(
        f"split {missing!r} is missing from {source}",
        expected=f"splits {list(wanted)}",
        found=f"top-level keys {found}",
        fix="use the complete file (MMSA: aligned_50.pkl / unaligned_50.pkl / unaligned_39.pkl)",
    )


def _mmsa_split(raw: Any, *, split: str, source: str, use_bert_ids: bool) -> MSASplit:
    if not isinstance(raw, Mapping):
        raise DataError(
            f"split {split!r} of {source} is not a dict of arrays",
            expected="a dict with text, audio, vision, regression_labels, ...",
            found=type(raw).__name__,
            fix=_MMSA_FIX,
        )
    required = (*_MMSA_REQUIRED, "text_bert") if use_bert_ids else _MMSA_REQUIRED
    for key in required:
        if key not in raw:
            fix = (
                "use an MMSA file that has text_bert, or set use_bert_ids=False"
                if key == "text_bert"
                else "use the complete MMSA file; this one lacks a required array"
            )
            raise DataError(
                f"key {key!r} is missing from split {split!r} of {source}",
                expected=f"keys {list(required)}",
                found=f"keys {sorted(map(str, raw))}",
                fix=fix,
            )
    kw = {"split": split, "source": source}
    text = _array(raw["text"], key="text", ndim=3, dtype=None, **kw)
    audio = _array(raw["audio"], key="audio", ndim=3, dtype=None, **kw)
    vision = _array(raw["vision"], key="vision", ndim=3, dtype=None, **kw)
    labels = _labels_2d(raw["regression_labels"], **kw)
    text_bert = None
    if raw.get("text_bert") is not None:
        text_bert = _array(raw["text_bert"], key="text_bert", ndim=3, dtype=None, **kw)
        if text_bert.shape[1] != 3:
            raise DataError(
                f"'text_bert' in split {split!r} of {source} has the wrong shape",
                expected="(N, 3, L): input ids, attention mask, segment ids",
                found=str(text_bert.shape),
                fix=_MMSA_FIX,
            )
    lengths_raw = {
        m: _array(raw[f"{m}_lengths"], key=f"{m}_lengths", ndim=1, dtype=None, **kw)
        for m in ("audio", "vision")
        if raw.get(f"{m}_lengths") is not None
    }
    modality_labels: dict[str, np.ndarray] = {}
    for m, keys in _SIMS_MODALITY_KEYS.items():
        for key in keys:
            if raw.get(key) is not None:
                modality_labels[m] = _labels_2d(raw[key], **kw, key=key).astype(np.float32)
                break
    ids = raw.get("id")
    raw_text = raw.get("raw_text")
    _check_n(
        {
            "regression_labels": labels,
            "text": text,
            "audio": audio,
            "vision": vision,
            "text_bert": text_bert,
            "id": None if ids is None else np.asarray(ids, dtype=object).reshape(-1),
            "raw_text": None
            if raw_text is None
            else np.asarray(raw_text, dtype=object).reshape(-1),
            **{f"{m}_lengths": a for m, a in lengths_raw.items()},
            **{f"labels_{m}": a for m, a in modality_labels.items()},
        },
        **kw,
    )
    n = labels.shape[0]
    text = _clean_features(text, modality="text", split=split)
    audio = _clean_features(audio, modality="audio", split=split)
    vision = _clean_features(vision, modality="vision", split=split)
    if text_bert is not None:
        text_bert = text_bert.astype(np.int64, copy=False)
    feats = {"audio": audio, "vision": vision}
    lengths = {
        m: _clip_lengths(
            lengths_raw[m].astype(np.int64), feats[m].shape[1], key=f"{m}_lengths", split=split
        )
        if m in lengths_raw
        else np.full(n, feats[m].shape[1], dtype=np.int64)
        for m in ("audio", "vision")
    }
    return MSASplit(
        text=text,
        audio=audio,
        vision=vision,
        labels=labels.astype(np.float32),
        text_lengths=_text_lengths(text, text_bert),
        audio_lengths=lengths["audio"],
        vision_lengths=lengths["vision"],
        ids=_string_array(ids, n)
        if ids is not None
        else _string_array([f"{split}_{i}" for i in range(n)], n),
        raw_text=None if raw_text is None else _string_array(raw_text, n),
        text_bert=text_bert,
        modality_labels=modality_labels,
        extra={k: v for k, v in raw.items() if k not in _MMSA_KNOWN},
    )


def _labels_2d(
    value: Any, *, split: str, source: str, key: str = "regression_labels"
) -> np.ndarray:
    """Labels of shape ``(N,)`` or ``(N, 1)`` as ``(N,)`` float."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{key!r} in split {split!r} of {source} is not numeric",
            expected="(N,) float labels",
            found=f"{type(value).__name__} ({exc})",
            fix=_MMSA_FIX,
        ) from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(
            f"{key!r} in split {split!r} of {source} has the wrong number of dimensions",
            expected="(N,) or (N, 1)",
            found=f"shape {arr.shape}",
            fix=_MMSA_FIX,
        )
    return arr.astype(np.float32)


def _from_mmsa(
    obj: Mapping[str, Any],
    *,
    source: str,
    name: str | None,
    dataset_kind: DatasetKind | None,
    expected_dims: Mapping[str, int | None] | None,
    use_bert_ids: bool,
) -> MSAData:
    for split in SPLITS:
        if split not in obj:
            raise _missing_split_error(source, sorted(map(str, obj)), SPLITS, split)
    splits = {
        split: _mmsa_split(obj[split], split=split, source=source, use_bert_ids=use_bert_ids)
        for split in SPLITS
    }
    aligned = not any(f"{m}_lengths" in obj[s] for s in SPLITS for m in ("audio", "vision"))
    meta = {"layout": "mmsa", "aligned": aligned, "text_features": True}
    return _finish(
        splits,
        source=source,
        name=name,
        dataset_kind=dataset_kind,
        expected_dims=expected_dims,
        meta=meta,
    )


# ---------------------------------------------------------------------------------------------
# MAG-BERT / MIB layout
# ---------------------------------------------------------------------------------------------
_MAGBERT_SPLITS = {"train": "train", "dev": "valid", "test": "test"}


def _magbert_split(samples: Any, *, split: str, source: str, max_seq_len: int) -> MSASplit:
    if not isinstance(samples, list | tuple) or not samples:
        raise DataError(
            f"split {split!r} of {source} is not a non-empty list of samples",
            expected="a list of ((words, visual, acoustic), label, segment)",
            found=type(samples).__name__
            if not isinstance(samples, list | tuple)
            else "an empty list",
            fix=_MAGBERT_FIX,
        )
    n = len(samples)
    words_all: list[list[str]] = []
    visual_all: list[np.ndarray] = []
    acoustic_all: list[np.ndarray] = []
    labels = np.empty(n, dtype=np.float32)
    ids = np.empty(n, dtype=object)
    dims: dict[str, int] = {}
    for i, sample in enumerate(samples):
        try:
            (words, visual, acoustic), label, segment = sample
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"sample {i} of split {split!r} in {source} has the wrong structure",
                expected="((words, visual (T, dv), acoustic (T, da)), label, segment)",
                found=f"{type(sample).__name__}: {exc}",
                fix=_MAGBERT_FIX,
            ) from exc
        for key, value, store in (
            ("visual", visual, visual_all),
            ("acoustic", acoustic, acoustic_all),
        ):
            arr = _array(
                value,
                key=f"{key} of sample {i}",
                split=split,
                source=source,
                ndim=2,
                dtype=np.float32,
            )
            if dims.setdefault(key, arr.shape[1]) != arr.shape[1]:
                raise DataError(
                    f"{key} dim of sample {i} of split {split!r} in {source} differs from "
                    "earlier samples",
                    expected=f"{key} dim {dims[key]}",
                    found=f"{key} dim {arr.shape[1]}",
                    fix="the file mixes feature extractions; re-create it",
                )
            store.append(arr)
        label_arr = np.asarray(label, dtype=np.float64).reshape(-1)
        if label_arr.size != 1:
            raise DataError(
                f"label of sample {i} of split {split!r} in {source} is not a single value",
                expected="a (1, 1) array or a scalar",
                found=f"shape {np.shape(label)}",
                fix=_MAGBERT_FIX,
            )
        labels[i] = label_arr[0]
        words_all.append([str(w) for w in np.asarray(words, dtype=object).reshape(-1)])
        ids[i] = str(segment)

    def pad(seqs: list[np.ndarray], d: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((n, max_seq_len, d), dtype=np.float32)
        lengths = np.empty(n, dtype=np.int64)
        for i, seq in enumerate(seqs):
            t = min(len(seq), max_seq_len)
            out[i, :t] = seq[:t]
            lengths[i] = max(t, 1)
        return out, lengths

    vision, vision_lengths = pad(visual_all, dims["visual"])
    audio, audio_lengths = pad(acoustic_all, dims["acoustic"])
    n_words = np.array([min(len(w), max_seq_len) for w in words_all], dtype=np.int64)
    text = (np.arange(max_seq_len)[None, :] < n_words[:, None]).astype(np.float32)[:, :, None]
    words_arr = np.empty(n, dtype=object)
    words_arr[:] = words_all
    return MSASplit(
        text=text,
        audio=_clean_features(audio, modality="audio", split=split),
        vision=_clean_features(vision, modality="vision", split=split),
        labels=labels,
        text_lengths=np.maximum(n_words, 1),
        audio_lengths=audio_lengths,
        vision_lengths=vision_lengths,
        ids=ids,
        raw_text=_string_array([" ".join(w) for w in words_all], n),
        extra={"words": words_arr},
    )


def _from_magbert(
    obj: Mapping[str, Any],
    *,
    source: str,
    name: str | None,
    dataset_kind: DatasetKind | None,
    expected_dims: Mapping[str, int | None] | None,
    max_seq_len: int,
) -> MSAData:
    for split in _MAGBERT_SPLITS:
        if split not in obj:
            raise _missing_split_error(source, sorted(map(str, obj)), tuple(_MAGBERT_SPLITS), split)
    splits = {
        ours: _magbert_split(obj[theirs], split=theirs, source=source, max_seq_len=max_seq_len)
        for theirs, ours in _MAGBERT_SPLITS.items()
    }
    meta = {"layout": "magbert", "aligned": True, "text_features": False}
    logger.info(
        "%s is a MAG-BERT/MIB word-aligned file: it has no text features; use the BERT text "
        "encoder (text is a word-position indicator, words are in raw_text)",
        source,
    )
    return _finish(
        splits,
        source=source,
        name=name,
        dataset_kind=dataset_kind,
        expected_dims=expected_dims,
        meta=meta,
        skip_expected=("text",),
    )


# ---------------------------------------------------------------------------------------------
# public loaders
# ---------------------------------------------------------------------------------------------
def _layout(obj: object, source: str) -> Literal["mmsa", "magbert"]:
    """Which layout a loaded pickle has, decided by its content."""
    if isinstance(obj, Mapping):
        values = [obj[k] for k in ("train", "valid", "dev", "test") if k in obj]
        if any(isinstance(v, Mapping) for v in values):
            return "mmsa"
        if any(isinstance(v, list | tuple) for v in values):
            return "magbert"
        found = f"a dict with keys {sorted(map(str, obj))[:10]}"
    else:
        found = type(obj).__name__
    raise DataError(
        f"{source} is not an MSA data pickle",
        expected="MMSA: {train, valid, test} -> dict of arrays; "
        "MAG-BERT/MIB: {train, dev, test} -> list of samples",
        found=found,
        fix="point the data path at aligned_50.pkl / unaligned_50.pkl / unaligned_39.pkl or a "
        "MAG-BERT mosi.pkl / mosei.pkl",
    )


def _check_sha(path: Path, expected_sha256: str | None) -> None:
    if expected_sha256 is None:
        return
    actual = sha256_file(path)
    if actual.lower() != expected_sha256.strip().lower():
        raise DataError(
            f"SHA-256 of {path} does not match",
            expected=expected_sha256,
            found=actual,
            fix="re-download the file (it is truncated, corrupt or a different version)",
        )


def load_msa(
    path: str | os.PathLike[str],
    *,
    dataset_kind: DatasetKind | None = None,
    expected_dims: Mapping[str, int | None] | None = None,
    expected_sha256: str | None = None,
    use_bert_ids: bool = False,
    max_seq_len: int = 50,
    name: str | None = None,
) -> MSAData:
    """Load an MMSA or MAG-BERT/MIB pickle, choosing the layout from its content.

    Args:
        path: the pickle file.
        dataset_kind: metric family; ``None`` infers it (SIMS per-modality labels, a
            ``mosi|mosei|sims|mvsa`` token in the path, then the label range).
        expected_dims: modality -> feature dim the config expects; a mismatch is an error that
            names the ``--set`` override to use (``None`` values are skipped).
        expected_sha256: if given, the file's SHA-256 must match (checked before unpickling).
        use_bert_ids: MMSA only; require ``text_bert`` (BERT input ids) in every split.
        max_seq_len: MAG-BERT only; audio/vision/word sequences are padded or truncated to it.
        name: data set name; default from the path (e.g. ``"mosi_aligned_50"``).

    Raises:
        DataError: unreadable/unsafe file, unknown layout, or a schema problem (see the module
            docstring). The file is never modified.
    """
    path = Path(path)
    _check_sha(path, expected_sha256)
    obj = safe_load(path)
    layout = _layout(obj, str(path))
    builders: dict[str, Callable[[], MSAData]] = {
        "mmsa": lambda: _from_mmsa(
            obj,  # type: ignore[arg-type]
            source=str(path),
            name=name,
            dataset_kind=dataset_kind,
            expected_dims=expected_dims,
            use_bert_ids=use_bert_ids,
        ),
        "magbert": lambda: _from_magbert(
            obj,  # type: ignore[arg-type]
            source=str(path),
            name=name,
            dataset_kind=dataset_kind,
            expected_dims=expected_dims,
            max_seq_len=max_seq_len,
        ),
    }
    return builders[layout]()


def _load_layout(
    path: str | os.PathLike[str], want: Literal["mmsa", "magbert"], **kwargs: Any
) -> MSAData:
    path = Path(path)
    _check_sha(path, kwargs.pop("expected_sha256", None))
    obj = safe_load(path)
    layout = _layout(obj, str(path))
    if layout != want:
        other = {"mmsa": "load_mmsa_pickle", "magbert": "load_magbert_pickle"}[layout]
        raise DataError(
            f"{path} has the {layout} layout, not {want}",
            expected=f"a {want} pickle",
            found=f"a {layout} pickle",
            fix=f"use {other}() or load_msa(), which picks the layout itself",
        )
    if want == "mmsa":
        return _from_mmsa(obj, source=str(path), **kwargs)  # type: ignore[arg-type]
    return _from_magbert(obj, source=str(path), **kwargs)  # type: ignore[arg-type]


def load_mmsa_pickle(
    path: str | os.PathLike[str],
    *,
    dataset_kind: DatasetKind | None = None,
    use_bert_ids: bool = False,
    expected_dims: Mapping[str, int | None] | None = None,
    expected_sha256: str | None = None,
    name: str | None = None,
) -> MSAData:
    """Load an MMSA ``aligned_50.pkl`` / ``unaligned_50.pkl`` / ``unaligned_39.pkl``.

    See :func:`load_msa` for the arguments; a MAG-BERT file is refused with a pointer to
    :func:`load_magbert_pickle`.
    """
    return _load_layout(
        path,
        "mmsa",
        dataset_kind=dataset_kind,
        use_bert_ids=use_bert_ids,
        expected_dims=expected_dims,
        expected_sha256=expected_sha256,
        name=name,
    )


def load_magbert_pickle(
    path: str | os.PathLike[str],
    *,
    dataset_kind: DatasetKind | None = None,
    max_seq_len: int = 50,
    expected_dims: Mapping[str, int | None] | None = None,
    expected_sha256: str | None = None,
    name: str | None = None,
) -> MSAData:
    """Load a MAG-BERT/MIB word-aligned pickle (``train|dev|test`` lists; ``dev`` -> ``valid``).

    Audio and vision are padded/truncated (keeping the first frames) to ``max_seq_len`` with
    lengths. There are no text features: ``text`` is a ``(N, max_seq_len, 1)`` word-position
    indicator, the words are in ``raw_text`` (joined by spaces) and ``extra["words"]``, and
    ``meta["text_features"]`` is ``False`` -- such data needs the BERT text encoder. The text
    entry of ``expected_dims`` is therefore not checked.
    """
    return _load_layout(
        path,
        "magbert",
        dataset_kind=dataset_kind,
        max_seq_len=max_seq_len,
        expected_dims=expected_dims,
        expected_sha256=expected_sha256,
        name=name,
    )


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _mmsa_annotations(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Derived ``annotations`` (Negative/Neutral/Positive) and ``classification_labels`` (0/1/2)."""
    cls = (labels >= 0).astype(np.int64) + (labels > 0).astype(np.int64)
    names = np.array(["Negative", "Neutral", "Positive"], dtype=object)
    return names[cls], cls.astype(np.float32)


def save_mmsa_pickle(
    data: MSAData,
    path: str | os.PathLike[str],
    *,
    aligned: bool = False,
    protocol: int = 4,
) -> Path:
    """Write ``data`` in the MMSA schema, atomically (temp file in the same dir + ``os.replace``).

    Each split gets ``raw_text``, ``id``, ``text``, ``audio``, ``vision``, ``regression_labels``,
    ``annotations`` and ``classification_labels`` (kept from ``extra`` when present, otherwise
    derived from the sign of the label), ``text_bert`` when present, ``regression_labels_T|A|V``
    when present, and ``audio_lengths``/``vision_lengths`` unless ``aligned`` (MMSA's aligned
    files have none, and :func:`load_msa` then uses the full length). Other ``extra`` entries are
    written as they are. ``meta`` is not stored.

    Returns:
        The path written.
    """
    path = Path(path)
    out: dict[str, dict[str, Any]] = {}
    for split_name in SPLITS:
        s = data.splits[split_name]
        annotations, classification = _mmsa_annotations(s.labels)
        raw_text = s.raw_text if s.raw_text is not None else _string_array([""] * s.n, s.n)
        entry: dict[str, Any] = {
            "raw_text": raw_text,
            "audio": s.audio.astype(np.float32, copy=False),
            "vision": s.vision.astype(np.float32, copy=False),
            "id": s.ids,
            "text": s.text.astype(np.float32, copy=False),
            "annotations": annotations,
            "classification_labels": classification,
            "regression_labels": s.labels.astype(np.float32, copy=False),
        }
        if s.text_bert is not None:
            entry["text_bert"] = s.text_bert.astype(np.int64, copy=False)
        if not aligned:
            entry["audio_lengths"] = s.audio_lengths.astype(np.int64, copy=False)
            entry["vision_lengths"] = s.vision_lengths.astype(np.int64, copy=False)
        for m, y in s.modality_labels.items():
            entry[_SIMS_MODALITY_KEYS[m][0]] = y.astype(np.float32, copy=False)  # type: ignore[index]
        entry.update(copy.copy(s.extra))
        out[split_name] = entry
    _atomic_pickle(out, path, protocol)
    logger.info("wrote MMSA pickle %s (%s)", path, data.name)
    return path
