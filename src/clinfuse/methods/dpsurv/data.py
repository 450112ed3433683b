r"""Whole-slide feature bags, survival labels and patient-level folds for DPsurv, checked on entry.

**Bags** (one file per slide, the file stem is the slide id):

* CLAM ``.h5``: datasets ``features`` ``(M, D)`` and ``coords`` ``(M, 2)`` (level-0 pixel ``x, y``
  of each patch's top-left corner); PANTHER reads them from a folder ending in ``feats_h5/``;
* ``.pt``: a bare tensor ``(M, D)`` (PANTHER's ``feats_pt/``), no coordinates; loaded with
  ``torch.load(weights_only=True)``;
* TRIDENT: ``<job>/<mag>x_<px>px_<ov>px_overlap/features_<encoder>/<slide>.h5``; when the feature
  file has no ``coords``, they are read from ``<job>/<mag>x_.../patches/<slide>_patches.h5``.

:func:`find_bags` accepts a folder of bag files, a folder holding ``feats_h5/``/``feats_pt/``, a
TRIDENT job folder or one of its patching folders (``encoder=`` / ``patching=`` choose when there
are several; the error lists the choices).

**Labels** (one row per slide; several slides per case are common):

* MCAT/PORPOISE style: ``case_id, slide_id, survival_months, censorship``;
* TCGA-CDR/PANTHER style: ``case_id, slide_id, {os,dss,dfi,pfi}_survival_days``,
  ``{os,dss,dfi,pfi}_censorship`` (``endpoint`` picks one; DPsurv uses ``dss``).

The files store **censorship (1 = censored)**; inside clinfuse every array holds
:math:`\text{event} = 1 - \text{censorship}` (1 = the event was observed). Slide ids are matched
to bag file stems after removing a WSI extension (``.svs``, ``.tif``, ...). A case's label must be
the same on every row of that case.

**Folds** (patient level): a splits folder with one sub-folder per fold (any names, sorted
naturally, e.g. ``k=0 .. k=4``) each holding ``train.csv`` and ``test.csv`` with ``case_id`` and/or
``slide_id`` columns (PANTHER/MMP/DPsurv); or MCAT files ``splits_{k}.csv`` with ``train`` and
``val`` columns (``val`` is the held-out part). A case in both the train and the test part of a
fold is an error (leak). Ids of a split file that are not in the cohort (no label or no bag) are
dropped with a log message.

:func:`load_cohort` ties the three together into a :class:`SurvivalCohort`; bags stay on disk and
are read on demand by :meth:`SurvivalCohort.bag`. Every error a user can cause is a
:class:`~clinfuse.core.errors.DataError` naming the slide, case, row or fold at fault.

Example:
    >>> import numpy as np
    >>> bags = {"s1": Bag("s1", np.ones((3, 2))), "s2": Bag("s2", np.zeros((2, 2)))}
    >>> c = cohort_from_bags(["c1"], [10.0], [1], {"c1": ["s1", "s2"]}, bags)
    >>> b = c.bag("c1")
    >>> b.features.shape, b.slide_index.tolist(), b.slides
    ((5, 2), [0, 0, 0, 1, 1], ('s1', 's2'))
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from clinfuse.core.errors import DataError, reads_untrusted, require
from clinfuse.core.paths import input_path
from clinfuse.core.runs import atomic_path, atomic_write_text

__all__ = [
    "DAYS_PER_UNIT",
    "Bag",
    "BagSource",
    "DiskBags",
    "LabelTable",
    "MemoryBags",
    "SurvivalCohort",
    "bag_shape",
    "check_bag",
    "cohort_from_bags",
    "find_bags",
    "load_cohort",
    "normalise_slide_id",
    "read_bag",
    "read_folds",
    "read_h5_bag",
    "read_labels",
    "read_pt_bag",
    "stratified_folds",
    "trident_patches_path",
    "write_csv",
    "write_h5_bag",
    "write_pt_bag",
]

logger = logging.getLogger(__name__)

Endpoint = Literal["os", "dss", "dfi", "pfi"]
TimeUnit = Literal["days", "months", "years"]
Aggregate = Literal["concat", "first"]
BagFormat = Literal["auto", "h5", "pt"]
LabelStyle = Literal["auto", "tcga_cdr", "mcat"]
Validate = Literal["header", "full"]
Folds = list[tuple[np.ndarray, np.ndarray]]

DAYS_PER_UNIT: dict[str, float] = {"days": 1.0, "months": 365.25 / 12.0, "years": 365.25}
"""Length of one time unit in days (a month is 1/12 of a Julian year, as in TCGA-CDR → MCAT)."""

WSI_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".czi")
BAG_SUFFIXES = (".h5", ".pt")
_SHOW = 20
_PATCHING_RE = re.compile(r"^\d+(?:\.\d+)?x_\d+px_\d+px_overlap$")
_ENCODER_RE = re.compile(r"^features_(.+)$")


def _listing(items: Sequence[Any], show: int = _SHOW) -> str:
    """``"3: a, b, c"``; long lists show the first ``show`` and how many more.

    Example:
        >>> _listing([f"s{i}" for i in range(23)], show=2)
        '23: s0, s1, ... and 21 more'
    """
    items = list(items)
    head = ", ".join(str(x) for x in items[:show])
    more = len(items) - show
    return f"{len(items)}: {head}" + (f", ... and {more} more" if more > 0 else "")


def normalise_slide_id(name: str) -> str:
    """The slide id as a bag file stem: whitespace stripped and a WSI extension removed.

    Example:
        >>> normalise_slide_id("TCGA-AA-0001-01Z-00-DX1.ABC.svs")
        'TCGA-AA-0001-01Z-00-DX1.ABC'
    """
    name = str(name).strip()
    for suffix in (*WSI_SUFFIXES, *BAG_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# -- bags ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Bag:
    """Patch features of one slide, or of all slides of one case (concatenated in slide order).

    For a case bag ``slide_id`` is the slide id when the case has one slide and the slide ids
    joined by ``+`` otherwise; ``slides`` lists them and ``slide_index`` maps patches to slides.

    Shape:
        features ``(M, D)`` float32; coords ``(M, 2)`` level-0 pixel ``(x, y)`` (int64 when the
        file stores integers, float64 otherwise) or None; slide_index ``(M,)`` int64 in
        ``[0, len(slides))``.
    """

    slide_id: str
    features: np.ndarray
    coords: np.ndarray | None = None
    slide_index: np.ndarray | None = None
    slides: tuple[str, ...] = ()
    case_id: str | None = None

    def __post_init__(self) -> None:
        feats = np.asarray(self.features)
        if feats.ndim != 2:
            raise DataError(
                f"slide {self.slide_id}: features must be a 2-D patch matrix",
                expected="(M, D)",
                found=f"shape {feats.shape}",
                fix="save one (n_patches, feature_dim) array per slide",
            )
        object.__setattr__(self, "features", feats.astype(np.float32, copy=False))
        m = feats.shape[0]
        if self.coords is not None:
            coords = np.asarray(self.coords)
            if coords.shape != (m, 2):
                raise DataError(
                    f"slide {self.slide_id}: coords do not match the features",
                    expected=f"({m}, 2)",
                    found=f"shape {coords.shape}",
                    fix="write one (x, y) pair per patch, in the order of the features",
                )
            kind = np.int64 if np.issubdtype(coords.dtype, np.integer) else np.float64
            object.__setattr__(self, "coords", coords.astype(kind, copy=False))
        index = np.zeros(m, np.int64) if self.slide_index is None else np.asarray(self.slide_index)
        object.__setattr__(self, "slide_index", index.astype(np.int64, copy=False))
        if not self.slides:
            object.__setattr__(self, "slides", (self.slide_id,))
        object.__setattr__(self, "slides", tuple(self.slides))
        if index.shape != (m,) or (m and (index.min() < 0 or index.max() >= len(self.slides))):
            raise DataError(
                f"slide {self.slide_id}: slide_index does not fit the bag",
                expected=f"({m},) ints in [0, {len(self.slides)})",
                found=f"shape {index.shape}",
            )

    @property
    def n_patches(self) -> int:
        """Number of patches ``M``."""
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        """Feature dimension ``D``."""
        return int(self.features.shape[1])


def check_bag(bag: Bag, expected_dim: int | None = None, where: str = "") -> Bag:
    """Raise a :class:`DataError` naming the slide if the bag is empty, has non-finite features
    or a feature dimension other than ``expected_dim``; return the bag otherwise.

    Example:
        >>> check_bag(Bag("s", np.ones((2, 3))), expected_dim=3).n_patches
        2
    """
    at = f"slide {bag.slide_id}" + (f" ({where})" if where else "")
    if bag.n_patches == 0:
        raise DataError(
            f"{at}: the bag is empty (no patches)",
            expected="M >= 1 patches",
            found=f"shape {bag.features.shape}",
            fix="re-run patch extraction for this slide or remove it from the labels csv",
        )
    if expected_dim is not None and bag.dim != expected_dim:
        raise DataError(
            f"{at}: feature dimension differs from the other bags",
            expected=f"D = {expected_dim}",
            found=f"D = {bag.dim}",
            fix="use one encoder for every slide (check the features_<encoder> folder)",
        )
    finite = np.isfinite(bag.features)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"{at}: {len(rows)} patch(es) have NaN or inf features",
            expected="finite features",
            found=f"patch rows {_listing(rows.tolist())}",
            fix="re-extract the features of this slide (a corrupted tile or a fp16 overflow)",
        )
    return bag


def _h5py() -> Any:
    return require("h5py", "surv")


def trident_patches_path(feature_path: str | Path) -> Path:
    """Where TRIDENT keeps the coordinates of a feature file: ``../patches/<slide>_patches.h5``.

    Example:
        >>> trident_patches_path("job/20x_256px_0px_overlap/features_uni_v1/s1.h5").as_posix()
        'job/20x_256px_0px_overlap/patches/s1_patches.h5'
    """
    p = Path(feature_path)
    return p.parent.parent / "patches" / f"{p.stem}_patches.h5"


def _open_h5(path: Path) -> Any:
    h5py = _h5py()
    if not path.is_file():
        raise DataError(f"bag file not found: {path}", fix="check the bags folder")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(
            f"cannot open {path} as HDF5 (truncated or not an .h5 file)",
            found=str(exc),
            fix="re-run feature extraction for this slide",
        ) from exc


def _h5_features(fh: Any, path: Path) -> Any:
    if "features" not in fh:
        raise DataError(
            f"{path} has no 'features' dataset",
            expected="datasets 'features' (M, D) and optionally 'coords' (M, 2)",
            found=f"keys {sorted(fh.keys())}",
            fix="point to CLAM/TRIDENT feature files (not patch-coordinate files)",
        )
    return fh["features"]


def _read_h5_coords(path: Path, fh: Any, coords_path: Path | None) -> np.ndarray | None:
    if "coords" in fh:
        return np.asarray(fh["coords"][()])
    cpath = coords_path if coords_path is not None else trident_patches_path(path)
    if not cpath.is_file():
        return None
    with _open_h5(cpath) as cf:
        if "coords" not in cf:
            raise DataError(
                f"{cpath} has no 'coords' dataset",
                found=f"keys {sorted(cf.keys())}",
                fix="point to TRIDENT patches/<slide>_patches.h5 files",
            )
        return np.asarray(cf["coords"][()])


def read_h5_bag(
    path: str | Path, slide_id: str | None = None, *, coords_path: str | Path | None = None
) -> Bag:
    """Read a CLAM/TRIDENT ``.h5`` bag; coordinates from the file, else from ``coords_path``,
    else from TRIDENT's ``../patches/<slide>_patches.h5`` when it exists, else None.

    Shape:
        features ``(M, D)`` float32; coords ``(M, 2)`` or None.
    """
    path = Path(path)
    slide_id = slide_id or path.stem
    with _open_h5(path) as fh:
        feats = np.asarray(_h5_features(fh, path)[()])
        coords = _read_h5_coords(path, fh, None if coords_path is None else Path(coords_path))
    if coords is not None and feats.ndim == 2 and len(coords) != len(feats):
        raise DataError(
            f"slide {slide_id}: {len(coords)} coordinates for {len(feats)} patches",
            expected="one (x, y) per patch",
            found=f"features {feats.shape}, coords {coords.shape}",
            fix="the patches and features files come from different runs: re-extract",
        )
    return Bag(slide_id, feats, coords)


def _torch_load(path: Path, mmap: bool = False) -> Any:
    import torch

    if not path.is_file():
        raise DataError(f"bag file not found: {path}", fix="check the bags folder")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, legacy pickle, unsafe globals
        raise DataError(
            f"cannot load {path} with torch.load(weights_only=True)",
            found=f"{type(exc).__name__}: {exc}",
            fix="save each bag as a bare tensor with torch.save(features, path)",
        ) from exc
    if not isinstance(obj, torch.Tensor):
        raise DataError(
            f"{path} does not hold a bare tensor",
            expected="torch.Tensor (M, D)",
            found=type(obj).__name__,
            fix="save each bag as a bare tensor with torch.save(features, path)",
        )
    return obj


def read_pt_bag(path: str | Path, slide_id: str | None = None) -> Bag:
    """Read a PANTHER ``.pt`` bag (a bare tensor); coords are None.

    Shape:
        features ``(M, D)`` float32.
    """
    path = Path(path)
    tensor = _torch_load(path)
    return Bag(slide_id or path.stem, tensor.detach().float().numpy())


def _read_h5_any(path: Path, slide_id: str | None) -> Bag:
    return read_h5_bag(path, slide_id)


_READERS: dict[str, Callable[[Path, str | None], Bag]] = {".h5": _read_h5_any, ".pt": read_pt_bag}


def _h5_shape(path: Path) -> tuple[int, ...]:
    with _open_h5(path) as fh:
        return tuple(int(s) for s in _h5_features(fh, path).shape)


def _pt_shape(path: Path) -> tuple[int, ...]:
    return tuple(int(s) for s in _torch_load(path, mmap=True).shape)


_SHAPES: dict[str, Callable[[Path], tuple[int, ...]]] = {".h5": _h5_shape, ".pt": _pt_shape}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise DataError(
            f"unknown bag format: {path}",
            expected=" or ".join(BAG_SUFFIXES),
            found=suffix or "(no suffix)",
        )
    return suffix


@reads_untrusted("a CLAM/TRIDENT feature bag (.h5 with features, or .pt)")
def read_bag(
    path: str | Path, slide_id: str | None = None, *, expected_dim: int | None = None
) -> Bag:
    """Read an ``.h5`` or ``.pt`` bag and :func:`check_bag` it (empty, dimension, NaN/inf)."""
    path = Path(path)
    return check_bag(_READERS[_suffix(path)](path, slide_id), expected_dim, where=str(path))


def bag_shape(path: str | Path) -> tuple[int, int]:
    """``(M, D)`` of a bag from its header only (h5 metadata, memory-mapped ``.pt``)."""
    path = Path(path)
    shape = _SHAPES[_suffix(path)](path)
    if len(shape) != 2:
        raise DataError(
            f"slide {path.stem}: features must be a 2-D patch matrix",
            expected="(M, D)",
            found=f"shape {shape} in {path}",
        )
    return shape[0], shape[1]


def write_h5_bag(path: str | Path, features: np.ndarray, coords: np.ndarray | None = None) -> Path:
    """Write a CLAM-layout ``.h5`` bag atomically (temporary file, then one rename).

    Shape:
        features ``(M, D)`` (stored float32); coords ``(M, 2)`` (stored int64 when integer).
    """
    h5py = _h5py()
    feats = np.asarray(features, dtype=np.float32)
    if coords is not None and np.shape(coords) != (len(feats), 2):
        raise DataError(
            f"{path}: coords do not match the features",
            expected=f"({len(feats)}, 2)",
            found=f"shape {np.shape(coords)}",
        )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("features", data=feats)
        if coords is not None:
            c = np.asarray(coords)
            c = c.astype(np.int64 if np.issubdtype(c.dtype, np.integer) else np.float64)
            fh.create_dataset("coords", data=c)
    return Path(path)


def write_pt_bag(path: str | Path, features: np.ndarray) -> Path:
    """Write a PANTHER ``.pt`` bag (bare float32 tensor) atomically.

    Shape:
        features ``(M, D)``.
    """
    import torch

    with atomic_path(path) as tmp:
        torch.save(torch.from_numpy(np.array(features, dtype=np.float32, copy=True)), tmp)
    return Path(path)


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a CSV atomically (no index column)."""
    return atomic_write_text(path, df.to_csv(index=False))


# -- finding bag files -----------------------------------------------------------------------
def _choose(options: list[str], wanted: str | None, what: str, param: str, where: Path) -> str:
    if wanted is not None:
        if wanted in options:
            return wanted
        raise DataError(
            f"{what} {wanted!r} not found under {where}",
            expected=f"one of {options}",
            found=wanted,
            fix=f"pass {param}= one of the listed choices",
        )
    if len(options) == 1:
        return options[0]
    raise DataError(
        f"{where} holds several {what}s; choose one",
        expected=f"{param}= one of {options}",
        found=f"{len(options)} {what}s: {options}",
        fix=f"pass {param}=... (e.g. {param}={options[0]!r})",
    )


def _subdirs(root: Path, pattern: re.Pattern[str]) -> dict[str, Path]:
    out = {}
    for p in sorted(root.iterdir()):
        m = pattern.match(p.name)
        if p.is_dir() and m:
            out[m.group(1) if m.groups() else p.name] = p
    return out


def _bag_folder(root: Path, fmt: BagFormat, encoder: str | None, patching: str | None) -> Path:
    """Resolve the folder that holds the bag files (see :func:`find_bags`)."""
    if any(p.suffix.lower() in BAG_SUFFIXES and p.is_file() for p in root.iterdir()):
        return root
    encoders = _subdirs(root, _ENCODER_RE)
    if encoders:
        return encoders[_choose(list(encoders), encoder, "encoder", "encoder", root)]
    patchings = _subdirs(root, _PATCHING_RE)
    if patchings:
        chosen = patchings[_choose(list(patchings), patching, "patching folder", "patching", root)]
        return _bag_folder(chosen, fmt, encoder, patching)
    panther = {k: root / f"feats_{k}" for k in ("h5", "pt") if (root / f"feats_{k}").is_dir()}
    if panther:
        wanted = None if fmt == "auto" else fmt
        return panther[_choose(list(panther), wanted, "bag format", "fmt", root)]
    raise DataError(
        f"no feature bags under {root}",
        expected="*.h5 / *.pt files, feats_h5/ or feats_pt/, or a TRIDENT job "
        "(<mag>x_<px>px_<ov>px_overlap/features_<encoder>/*.h5)",
        found=f"entries {_listing(sorted(p.name for p in root.iterdir()))}",
        fix="point bags_root at the folder that holds the per-slide feature files",
    )


def find_bags(
    root: str | Path,
    *,
    fmt: BagFormat = "auto",
    encoder: str | None = None,
    patching: str | None = None,
) -> dict[str, Path]:
    """Map slide id (file stem) to bag file under ``root``.

    ``root`` may be a folder of ``.h5``/``.pt`` files, a folder holding ``feats_h5/`` and/or
    ``feats_pt/``, a TRIDENT job folder (``<mag>x_<px>px_<ov>px_overlap/features_<encoder>/``)
    or one TRIDENT patching folder. ``encoder`` (the ``features_<encoder>`` suffix) and
    ``patching`` (the folder name) choose when there are several: the error lists the choices.
    A folder holding both ``.h5`` and ``.pt`` files needs ``fmt``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"bags folder not found: {root}",
            expected="an existing folder of per-slide feature files",
            fix="check the path (feats_h5/, feats_pt/ or a TRIDENT job folder)",
        )
    folder = _bag_folder(root, fmt, encoder, patching)
    by_suffix = {s: sorted(p for p in folder.glob(f"*{s}") if p.is_file()) for s in BAG_SUFFIXES}
    present = [s.lstrip(".") for s, files in by_suffix.items() if files]
    kind = _choose(present, None if fmt == "auto" else fmt, "bag format", "fmt", folder)
    files = by_suffix[f".{kind}"]
    logger.info("found %d .%s bags in %s", len(files), kind, folder)
    return {p.stem: p for p in files}


# -- bag sources -----------------------------------------------------------------------------
class BagSource(Protocol):
    """Where a cohort's slide bags come from (memory or disk)."""

    def slide_ids(self) -> list[str]: ...

    def read(self, slide_id: str) -> Bag: ...

    def shape(self, slide_id: str) -> tuple[int, int]: ...


@dataclass(frozen=True, eq=False)
class MemoryBags:
    """Slide bags held in memory (synthetic cohorts, tests); :meth:`read` returns copies, so
    callers may modify what they get without touching the cohort."""

    bags: Mapping[str, Bag]

    def slide_ids(self) -> list[str]:
        return list(self.bags)

    def read(self, slide_id: str) -> Bag:
        bag = self.bags[slide_id]
        coords = None if bag.coords is None else bag.coords.copy()
        return replace(bag, features=bag.features.copy(), coords=coords)

    def shape(self, slide_id: str) -> tuple[int, int]:
        f = self.bags[slide_id].features
        return int(f.shape[0]), int(f.shape[1])


@dataclass(frozen=True, eq=False)
class DiskBags:
    """Slide bags read from ``.h5``/``.pt`` files on demand (nothing is cached)."""

    paths: Mapping[str, Path]

    def slide_ids(self) -> list[str]:
        return list(self.paths)

    def read(self, slide_id: str) -> Bag:
        path = self.paths[slide_id]
        return _READERS[_suffix(path)](path, slide_id)

    def shape(self, slide_id: str) -> tuple[int, int]:
        return bag_shape(self.paths[slide_id])


# -- the cohort ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SurvivalCohort:
    """Cases with a survival label, their slides' bags and optional patient-level folds.

    ``event`` is 1 when the event was observed and 0 when censored (files store censorship, the
    opposite). ``truth`` holds a synthetic cohort's planted ground truth; its key ``per_case``
    names the entries aligned with ``case_ids`` (arrays indexed along axis 0, or dicts keyed by
    case id), which :meth:`subset` restricts.

    Shape:
        case_ids ``(n,)`` str; time ``(n,)`` float64 in ``time_unit``; event ``(n,)`` int64;
        folds: list of ``(train_idx, test_idx)`` int64 arrays of case positions.
    """

    case_ids: np.ndarray
    time: np.ndarray
    event: np.ndarray
    slides: dict[str, list[str]]
    source: BagSource
    feature_dim: int
    folds: Folds | None = None
    truth: dict[str, Any] | None = None
    time_unit: str = "days"
    _pos: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.case_ids).astype(str)
        object.__setattr__(self, "case_ids", ids)
        object.__setattr__(self, "time", np.asarray(self.time, dtype=np.float64).reshape(-1))
        object.__setattr__(self, "event", np.asarray(self.event).astype(np.int64).reshape(-1))
        n = len(ids)
        if self.time.shape != (n,) or self.event.shape != (n,):
            raise DataError(
                "case_ids, time and event differ in length",
                expected=f"{n} each",
                found=f"time {self.time.shape}, event {self.event.shape}",
            )
        pos = {c: i for i, c in enumerate(ids)}
        if len(pos) != n:
            dup = [c for c, k in Counter(ids.tolist()).items() if k > 1]
            raise DataError("duplicate case ids", found=_listing(dup), fix="one row per case")
        object.__setattr__(self, "_pos", pos)
        bad_t = np.flatnonzero(~np.isfinite(self.time) | (self.time < 0))
        if len(bad_t):
            raise DataError(
                "survival times must be finite and >= 0",
                found=_listing([f"case {ids[i]}: {self.time[i]}" for i in bad_t]),
            )
        bad_e = np.flatnonzero(~np.isin(self.event, (0, 1)))
        if len(bad_e):
            raise DataError(
                "event must be 0 (censored) or 1 (observed)",
                found=_listing([f"case {ids[i]}: {self.event[i]}" for i in bad_e]),
            )
        no_slide = [c for c in ids if not self.slides.get(c)]
        if no_slide:
            raise DataError("cases without slides", found=_listing(no_slide))
        if self.folds is not None:
            folds = []
            for k, (tr, te) in enumerate(self.folds):
                tr, te = np.asarray(tr, np.int64), np.asarray(te, np.int64)
                for part in (tr, te):
                    if len(part) and (part.min() < 0 or part.max() >= n):
                        raise DataError(f"fold {k}: case index out of range [0, {n})")
                leak = np.intersect1d(tr, te)
                if len(leak):
                    raise DataError(
                        f"fold {k}: cases in both train and test (leak)",
                        found=_listing(ids[leak].tolist()),
                        fix="each case must be in exactly one part of a fold",
                    )
                folds.append((tr, te))
            object.__setattr__(self, "folds", folds)

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def n_cases(self) -> int:
        """Number of cases ``n``."""
        return len(self.case_ids)

    def index(self, case_id: str) -> int:
        """Position of ``case_id`` in :attr:`case_ids`."""
        try:
            return self._pos[case_id]
        except KeyError:
            raise DataError(f"unknown case {case_id!r}", fix="use an id from case_ids") from None

    def slide_bag(self, slide_id: str, case_id: str | None = None) -> Bag:
        """One slide's bag, checked (non-empty, finite, ``feature_dim`` columns)."""
        bag = self.source.read(slide_id)
        where = f"case {case_id}" if case_id is not None else ""
        return check_bag(bag, self.feature_dim, where=where)

    def bag(self, case: str | int) -> Bag:
        """All patches of a case: its slides' bags concatenated in slide order.

        Shape:
            features ``(M_1 + ... + M_S, D)``; ``slide_index`` gives each patch's slide; coords
            are concatenated when every slide has them, else None.
        """
        case_id = self.case_ids[case] if isinstance(case, int | np.integer) else str(case)
        self.index(case_id)
        slides = self.slides[case_id]
        bags = [self.slide_bag(s, case_id) for s in slides]
        if len(bags) == 1:
            return replace(bags[0], case_id=case_id)
        coords = None
        if all(b.coords is not None for b in bags):
            coords = np.concatenate([b.coords for b in bags])  # type: ignore[misc]
        return Bag(
            slide_id="+".join(slides),
            features=np.concatenate([b.features for b in bags]),
            coords=coords,
            slide_index=np.concatenate([np.full(b.n_patches, i) for i, b in enumerate(bags)]),
            slides=tuple(slides),
            case_id=case_id,
        )

    def bags(self) -> Iterator[Bag]:
        """The case bags in :attr:`case_ids` order."""
        for c in self.case_ids:
            yield self.bag(str(c))

    def subset(self, idx: np.ndarray | Sequence[int]) -> SurvivalCohort:
        """The cohort restricted to case positions ``idx`` (int positions or a boolean mask).

        Folds are dropped (their indices refer to the full cohort); ``truth`` entries named in
        ``truth["per_case"]`` are restricted, the rest is shared.
        """
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        ids = self.case_ids[idx]
        truth = None
        if self.truth is not None:
            truth = dict(self.truth)
            for key in self.truth.get("per_case", ()):
                value = self.truth[key]
                if isinstance(value, Mapping):
                    truth[key] = {c: value[c] for c in ids.tolist()}
                else:
                    truth[key] = np.asarray(value)[idx]
        return SurvivalCohort(
            case_ids=ids,
            time=self.time[idx],
            event=self.event[idx],
            slides={c: list(self.slides[c]) for c in ids.tolist()},
            source=self.source,
            feature_dim=self.feature_dim,
            folds=None,
            truth=truth,
            time_unit=self.time_unit,
        )

    def fold(self, k: int) -> tuple[SurvivalCohort, SurvivalCohort]:
        """``(train, test)`` cohorts of fold ``k``."""
        if self.folds is None:
            raise DataError(
                "this cohort has no folds",
                fix="pass splits_root= to load_cohort, or use stratified_folds(event)",
            )
        tr, te = self.folds[k]
        return self.subset(tr), self.subset(te)


def cohort_from_bags(
    case_ids: Sequence[str],
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    slides: Mapping[str, Sequence[str]],
    bags: Mapping[str, Bag],
    *,
    folds: Folds | None = None,
    truth: dict[str, Any] | None = None,
    time_unit: str = "days",
) -> SurvivalCohort:
    """A cohort whose slide bags are held in memory; every bag is checked on entry."""
    missing = [s for c in case_ids for s in slides[c] if s not in bags]
    if missing:
        raise DataError("slides without a bag", found=_listing(missing))
    dims = Counter(b.dim for b in bags.values())
    dim = dims.most_common(1)[0][0] if dims else 0
    for c in case_ids:
        for s in slides[c]:
            check_bag(bags[s], dim, where=f"case {c}")
    return SurvivalCohort(
        case_ids=np.asarray(case_ids),
        time=np.asarray(time),
        event=np.asarray(event),
        slides={c: list(slides[c]) for c in case_ids},
        source=MemoryBags(dict(bags)),
        feature_dim=dim,
        folds=folds,
        truth=truth,
        time_unit=time_unit,
    )


# -- labels ----------------------------------------------------------------------------------
def _cdr_columns(endpoint: Endpoint) -> tuple[str, str, TimeUnit]:
    return f"{endpoint}_survival_days", f"{endpoint}_censorship", "days"


def _mcat_columns(endpoint: Endpoint) -> tuple[str, str, TimeUnit]:
    return "survival_months", "censorship", "months"


_LABEL_STYLES: dict[str, Callable[[Endpoint], tuple[str, str, TimeUnit]]] = {
    "tcga_cdr": _cdr_columns,
    "mcat": _mcat_columns,
}


@dataclass(frozen=True, eq=False)
class LabelTable:
    """Validated survival labels, one row per slide.

    ``rows`` has columns ``case_id, slide_id`` (str, slide ids normalised), ``time`` (float64 in
    ``time_unit``), ``event`` (int64, 1 = observed) and ``line`` (the CSV line number).
    """

    rows: pd.DataFrame
    time_unit: str
    style: str
    source: Path


def _bad_rows(df: pd.DataFrame, mask: pd.Series | np.ndarray, what: str) -> list[str]:
    sub = df[np.asarray(mask)]
    return [
        f"line {r.line} (case {r.case_id}, slide {r.slide_id}): {r[what]}"
        for _, r in sub.iterrows()
    ]


def _not_a_name(value: str) -> bool:
    """Whether an id from a label CSV cannot be one file-name component."""
    return any(ch in value for ch in "/\\\x00") or not value.strip(".")


@reads_untrusted("an MCAT or TCGA-CDR label CSV")
def read_labels(
    path: str | Path,
    *,
    endpoint: Endpoint = "dss",
    time_unit: TimeUnit | None = None,
    style: LabelStyle = "auto",
    drop_missing: bool = False,
) -> LabelTable:
    """Read and validate an MCAT or TCGA-CDR style label CSV (see the module docstring).

    ``style="auto"`` takes TCGA-CDR columns for ``endpoint`` when present, else the MCAT
    columns (whose single endpoint is whatever the file holds). ``time_unit=None`` keeps the
    file's unit (days for TCGA-CDR, months for MCAT). Rows with a missing time or censorship
    raise unless ``drop_missing`` (TCGA-CDR leaves DSS empty for some cases).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"labels csv not found: {path}", fix="check the path")
    df = pd.read_csv(path, dtype={"case_id": str, "slide_id": str}, float_precision="round_trip")
    styles = list(_LABEL_STYLES) if style == "auto" else [style]
    for name in styles:
        tcol, ccol, unit = _LABEL_STYLES[name](endpoint)
        if {"case_id", "slide_id", tcol, ccol} <= set(df.columns):
            break
    else:
        wanted = {n: ["case_id", "slide_id", *_LABEL_STYLES[n](endpoint)[:2]] for n in styles}
        raise DataError(
            f"{path}: not a survival label csv for endpoint {endpoint!r}",
            expected=" or ".join(f"{n}: {cols}" for n, cols in wanted.items()),
            found=f"columns {list(df.columns)}",
            fix="rename the columns, or pick another endpoint= (os, dss, dfi, pfi)",
        )
    out = pd.DataFrame(
        {
            "case_id": df["case_id"],
            "slide_id": df["slide_id"],
            "time": pd.to_numeric(df[tcol], errors="coerce"),
            "cens": pd.to_numeric(df[ccol], errors="coerce"),
            "line": np.arange(len(df)) + 2,
        }
    )
    for col in ("case_id", "slide_id"):
        empty = out[col].isna() | (out[col].astype(str).str.strip() == "")
        if empty.any():
            raise DataError(
                f"{path}: empty {col}",
                found=f"lines {_listing(out.loc[empty, 'line'].tolist())}",
                fix=f"fill {col} on every row",
            )
    out["case_id"] = out["case_id"].astype(str).str.strip()
    out["slide_id"] = out["slide_id"].map(normalise_slide_id)
    for col in ("case_id", "slide_id"):
        bad = out[col].map(_not_a_name)
        if bad.any():
            raise DataError(
                f"{path}: {col} values that cannot be file names",
                expected="ids without '/', '\\' or NUL bytes, other than '.' and '..' (case "
                "ids name the report files)",
                found=_listing(_bad_rows(out, bad, col)),
                fix=f"rename these {col} values (TCGA barcodes are fine)",
            )
    raw = df[[tcol, ccol]].rename(columns={tcol: "time", ccol: "cens"})
    for col, src in (("time", tcol), ("cens", ccol)):
        not_num = out[col].isna() & raw[col].notna()
        if not_num.any():
            shown = out.assign(**{col: raw[col]})
            raise DataError(
                f"{path}: {src} is not a number",
                found=_listing(_bad_rows(shown, not_num, col)),
                fix="write numbers (leave the cell empty when unknown)",
            )
    missing = out["time"].isna() | out["cens"].isna()
    if missing.any():
        if not drop_missing:
            raise DataError(
                f"{path}: missing {tcol} or {ccol}",
                found=_listing(_bad_rows(out, missing, "time")),
                fix="fill them, or pass drop_missing=True to drop these slides",
            )
        logger.info("dropping %d slides without a %s label", int(missing.sum()), endpoint)
        out = out[~missing]
    checks = (
        (~np.isfinite(out["time"]), "time", f"{tcol} must be finite"),
        (out["time"] < 0, "time", f"{tcol} must be >= 0"),
        (~out["cens"].isin((0, 1)), "cens", f"{ccol} must be 0 (event) or 1 (censored)"),
    )
    for bad, col, msg in checks:
        if bad.any():
            raise DataError(
                f"{path}: {msg}",
                found=_listing(_bad_rows(out, bad, col)),
                fix="correct these rows (censorship uses 1 = censored)",
            )
    out["event"] = (1 - out["cens"]).astype(np.int64)
    per_case = out.groupby("case_id", sort=False).agg(
        nt=("time", "nunique"), ne=("event", "nunique")
    )
    conflict = per_case.index[(per_case["nt"] > 1) | (per_case["ne"] > 1)].tolist()
    if conflict:
        shown = [
            f"case {c}: "
            + ", ".join(f"{r.slide_id}=({r.time}, event {r.event})" for _, r in g.iterrows())
            for c, g in out[out["case_id"].isin(conflict)].groupby("case_id", sort=False)
        ]
        raise DataError(
            f"{path}: cases with conflicting labels across their slides",
            found=_listing(shown),
            fix="a case has one survival label: fix the rows of these cases",
        )
    owners = out.groupby("slide_id", sort=False)["case_id"].nunique()
    shared = owners.index[owners > 1].tolist()
    if shared:
        raise DataError(
            f"{path}: slides listed under several cases",
            found=_listing(shared),
            fix="each slide belongs to one case",
        )
    out = out.drop_duplicates("slide_id", keep="first")
    target = unit if time_unit is None else time_unit
    if target != unit:
        out["time"] = out["time"].astype(np.float64) * (DAYS_PER_UNIT[unit] / DAYS_PER_UNIT[target])
    out["time"] = out["time"].astype(np.float64)
    rows = out[["case_id", "slide_id", "time", "event", "line"]].reset_index(drop=True)
    return LabelTable(rows=rows, time_unit=target, style=name, source=path)


# -- folds -----------------------------------------------------------------------------------
def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _split_ids(df: pd.DataFrame, source: str, column: str | None = None) -> list[tuple[str, str]]:
    """``(kind, id)`` pairs of one split file or column; kind is "case", "slide" or "any"."""
    if column is not None:
        return [("any", str(v).strip()) for v in df[column].dropna()]
    if "case_id" in df.columns:
        return [("case", str(v).strip()) for v in df["case_id"].dropna()]
    if "slide_id" in df.columns:
        return [("slide", normalise_slide_id(v)) for v in df["slide_id"].dropna()]
    raise DataError(
        f"{source}: no case_id or slide_id column",
        expected="a case_id and/or slide_id column",
        found=f"columns {list(df.columns)}",
        fix="write the fold's cases in a case_id column",
    )


def _read_split_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str)


def _folder_folds(root: Path) -> list[tuple[str, list, list]]:
    """Fold folders (``k=0`` ...) or ``root`` itself when it holds train.csv/test.csv."""
    dirs = (
        [root]
        if (root / "train.csv").is_file()
        else sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
    )
    out = []
    for d in dirs:
        have = [(d / f).is_file() for f in ("train.csv", "test.csv")]
        if not any(have):
            continue
        if not all(have):
            raise DataError(
                f"fold folder {d} lacks train.csv or test.csv",
                expected="both train.csv and test.csv",
                found=sorted(p.name for p in d.iterdir()),
            )
        tr = _split_ids(_read_split_csv(d / "train.csv"), str(d / "train.csv"))
        te = _split_ids(_read_split_csv(d / "test.csv"), str(d / "test.csv"))
        out.append((d.name, tr, te))
    return out


def _mcat_folds(root: Path) -> list[tuple[str, list, list]]:
    files = sorted(root.glob("splits_*.csv"), key=lambda p: _natural_key(p.name))
    out = []
    for f in files:
        df = _read_split_csv(f)
        if not {"train", "val"} <= set(df.columns):
            raise DataError(
                f"{f}: MCAT split without train/val columns",
                expected="columns train and val",
                found=f"columns {list(df.columns)}",
            )
        out.append((f.name, _split_ids(df, str(f), "train"), _split_ids(df, str(f), "val")))
    return out


_FOLD_LAYOUTS: dict[str, Callable[[Path], list[tuple[str, list, list]]]] = {
    "train.csv/test.csv folders": _folder_folds,
    "MCAT splits_{k}.csv": _mcat_folds,
}


def read_folds(
    splits_root: str | Path,
    case_ids: Sequence[str],
    slide_to_case: Mapping[str, str] | None = None,
) -> Folds:
    """Patient-level folds as ``(train_idx, test_idx)`` positions in ``case_ids``.

    Split files may name cases (``case_id``) or slides (``slide_id``, mapped through
    ``slide_to_case``); MCAT columns may hold either. Raises on a case in both parts of a fold.
    """
    root = Path(splits_root)
    if not root.is_dir():
        raise DataError(f"splits folder not found: {root}", fix="check the path")
    raw: list[tuple[str, list, list]] = []
    for layout in _FOLD_LAYOUTS.values():
        raw = layout(root)
        if raw:
            break
    if not raw:
        raise DataError(
            f"no folds under {root}",
            expected=" or ".join(_FOLD_LAYOUTS),
            found=f"entries {_listing(sorted(p.name for p in root.iterdir()))}",
            fix="point splits_root at the folder holding the fold folders or splits_{k}.csv",
        )
    pos = {str(c): i for i, c in enumerate(case_ids)}
    slide_to_case = dict(slide_to_case or {})

    def resolve(pairs: list[tuple[str, str]]) -> list[str]:
        out = []
        for kind, v in pairs:
            if kind == "slide":
                out.append(slide_to_case.get(v, f"slide:{v}"))
            elif kind == "any" and v not in pos:
                out.append(slide_to_case.get(normalise_slide_id(v), v))
            else:
                out.append(v)
        return out

    folds: Folds = []
    for name, tr_raw, te_raw in raw:
        tr, te = resolve(tr_raw), resolve(te_raw)
        leak = sorted(set(tr) & set(te))
        if leak:
            raise DataError(
                f"fold {name} under {root}: cases in both train and test (leak)",
                found=_listing(leak),
                fix="remove these cases from the train part of the fold",
            )
        unknown = sorted({c for c in (*tr, *te) if c not in pos})
        if unknown:
            logger.info("fold %s: %d ids not in the cohort are dropped", name, len(unknown))
        tr_idx = np.unique(np.array([pos[c] for c in tr if c in pos], np.int64))
        te_idx = np.unique(np.array([pos[c] for c in te if c in pos], np.int64))
        if len(tr_idx) == 0 or len(te_idx) == 0:
            raise DataError(
                f"fold {name} under {root}: no case of its train or test part is in the cohort",
                found=f"{len(tr_idx)} train, {len(te_idx)} test cases matched",
                fix="check that the split files and the labels csv use the same case ids",
            )
        folds.append((tr_idx, te_idx))
    return folds


def stratified_folds(event: np.ndarray, n_folds: int = 5, seed: int = 0) -> Folds:
    """Patient-level K folds stratified by event: each fold tests ~1/K of the events and of
    the censored cases.

    Example:
        >>> folds = stratified_folds(np.array([1, 0] * 5), n_folds=5, seed=0)
        >>> [len(te) for _, te in folds], sorted(np.concatenate([te for _, te in folds]).tolist())
        ([2, 2, 2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    event = np.asarray(event).astype(np.int64)
    if n_folds < 2 or len(event) < n_folds:
        raise DataError(
            "cannot make folds",
            expected=f"2 <= n_folds <= n_cases ({len(event)})",
            found=f"n_folds = {n_folds}",
        )
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(event), np.int64)
    start = 0
    for value in np.unique(event):
        members = rng.permutation(np.flatnonzero(event == value))
        fold_of[members] = (np.arange(len(members)) + start) % n_folds
        start += len(members)
    all_idx = np.arange(len(event))
    return [(all_idx[fold_of != k], all_idx[fold_of == k]) for k in range(n_folds)]


# -- loading a cohort ------------------------------------------------------------------------
def load_cohort(
    bags_root: str | Path,
    labels_csv: str | Path,
    splits_root: str | Path | None = None,
    *,
    endpoint: Endpoint = "dss",
    time_unit: TimeUnit = "days",
    aggregate: Aggregate = "concat",
    fmt: BagFormat = "auto",
    encoder: str | None = None,
    patching: str | None = None,
    feature_dim: int | None = None,
    label_style: LabelStyle = "auto",
    drop_missing_labels: bool = False,
    missing_bags: Literal["error", "drop"] = "error",
    validate: Validate = "header",
    allow_outside: bool = False,
) -> SurvivalCohort:
    """Match bags to labels by slide id and build a :class:`SurvivalCohort` (bags stay on disk).

    Cases keep the order of their first row in the labels csv; a case's slides keep file order.
    ``aggregate="concat"`` uses every slide of a case, ``"first"`` only the first one (DPsurv's
    ``drop_duplicates('case_id')``). Every labelled slide must have a bag (one error lists all
    missing ones) unless ``missing_bags="drop"``. ``validate="header"`` checks shapes (empty,
    dimension) from file headers and NaN/inf when a bag is read; ``"full"`` reads every bag now.
    Times are converted to ``time_unit`` (days by default, DPsurv's unit; a month is 365.25/12
    days). ``fmt``/``encoder``/``patching`` go to :func:`find_bags`, ``endpoint``/``label_style``
    to :func:`read_labels`, ``splits_root`` to :func:`read_folds`.

    A labelled slide's bag must resolve under ``bags_root`` (a symbolic link to a file or a
    folder elsewhere is refused with :class:`~clinfuse.core.errors.UnsafePathError` before any
    bag is opened) unless ``allow_outside`` (the path policy of :mod:`clinfuse.core.paths`).
    """
    labels = read_labels(
        labels_csv,
        endpoint=endpoint,
        time_unit=time_unit,
        style=label_style,
        drop_missing=drop_missing_labels,
    )
    rows = labels.rows
    paths = find_bags(bags_root, fmt=fmt, encoder=encoder, patching=patching)
    has_bag = rows["slide_id"].isin(list(paths))
    if not has_bag.all():
        miss = rows.loc[~has_bag, "slide_id"].tolist()
        if missing_bags == "error":
            example = next(iter(paths.values()), None)
            raise DataError(
                f"{len(miss)} labelled slides have no bag under {bags_root}",
                expected=f"<slide_id>{'' if example is None else example.suffix} for every "
                f"slide_id of {labels.source.name}"
                + ("" if example is None else f" (e.g. {example.name})"),
                found=f"missing {_listing(miss)}",
                fix="extract features for these slides, point bags_root/encoder at the right "
                "folder, or pass missing_bags='drop' to drop them",
            )
        logger.warning("dropping %d labelled slides without a bag: %s", len(miss), _listing(miss))
        rows = rows[has_bag]
    if rows.empty:
        raise DataError(f"no labelled slide has a bag under {bags_root}")
    n_unlabelled = len(set(paths) - set(rows["slide_id"]))
    if n_unlabelled:
        logger.info("%d bags have no label row and are ignored", n_unlabelled)
    slides: dict[str, list[str]] = {}
    for case, slide in zip(rows["case_id"], rows["slide_id"], strict=True):
        slides.setdefault(case, []).append(slide)
    if aggregate == "first":
        slides = {c: s[:1] for c, s in slides.items()}
    first = rows.drop_duplicates("case_id", keep="first")
    case_ids = first["case_id"].to_numpy(str)
    line = dict(zip(rows["slide_id"], rows["line"], strict=True))
    source = DiskBags({
        s: input_path(bags_root, paths[s], allow_outside=allow_outside,
                      source=f"{labels.source.name} line {line[s]} (slide {s})")
        for ss in slides.values() for s in ss
    })  # fmt: skip
    dim = _check_shapes(source, slides, feature_dim)
    if validate == "full":
        for c, ss in slides.items():
            for s in ss:
                check_bag(source.read(s), dim, where=f"case {c}, {source.paths[s]}")
    folds = None
    if splits_root is not None:
        slide_to_case = dict(zip(labels.rows["slide_id"], labels.rows["case_id"], strict=True))
        folds = read_folds(splits_root, case_ids.tolist(), slide_to_case)
    return SurvivalCohort(
        case_ids=case_ids,
        time=first["time"].to_numpy(np.float64),
        event=first["event"].to_numpy(np.int64),
        slides=slides,
        source=source,
        feature_dim=dim,
        folds=folds,
        time_unit=labels.time_unit,
    )


def _check_shapes(
    source: DiskBags, slides: Mapping[str, list[str]], feature_dim: int | None
) -> int:
    """Empty bags and feature-dimension mismatches from file headers; returns D."""
    shapes = {(c, s): source.shape(s) for c, ss in slides.items() for s in ss}
    empty = [f"{s} (case {c})" for (c, s), (m, _) in shapes.items() if m == 0]
    if empty:
        raise DataError(
            "empty bags (no patches)",
            expected="M >= 1 patches per slide",
            found=_listing(empty),
            fix="re-run patch extraction for these slides or remove them from the labels csv",
        )
    dims = Counter(d for _, d in shapes.values())
    dim = feature_dim if feature_dim is not None else dims.most_common(1)[0][0]
    wrong = [f"{s} (case {c}): D = {d}" for (c, s), (_, d) in shapes.items() if d != dim]
    if wrong:
        raise DataError(
            "feature dimension differs between bags",
            expected=f"D = {dim}"
            + (" (feature_dim)" if feature_dim is not None else " (most bags)"),
            found=_listing(wrong),
            fix="use one encoder for every slide (check the features_<encoder> folder)",
        )
    return int(dim)
