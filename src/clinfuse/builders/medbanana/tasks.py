"""Edit tasks: (source image, disease, direction add|remove), from folders or a CSV manifest.

The rule of the official code (``add_disease.py`` / ``remove_disease.py`` of
github.com/richardChenzhihui/med-banana-50k): add tasks = every normal image x every disease of
its dataset; remove tasks = every diseased image -> normal. A dataset is a folder
``<dataset>/{normal, <Disease>}/*``; its modality comes from the config or from the dataset name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from clinfuse.core.errors import DataError
from clinfuse.core.paths import Slugs, input_path, slug

__all__ = [
    "DISEASE_PRESETS",
    "IMAGE_SUFFIXES",
    "Source",
    "Task",
    "make_tasks",
    "modality_from_name",
    "read_manifest",
    "scan_folder",
]

DISEASE_PRESETS: dict[str, tuple[str, ...]] = {
    "chest_xray": (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Enlarged_Cardiomediastinum",
        "Fracture",
        "Lung_Lesion",
        "Lung_Opacity",
        "Pleural_Effusion",
        "Pneumonia",
        "Pneumothorax",
    ),
    "brain_mri": ("glioma", "meningioma", "pituitary"),
    "fundus": ("AMD", "Cataract", "Diabetes", "Glaucoma", "Hypertension", "Myopia"),
}
"""The 20 disease names visible in the official repository (11 MIMIC-CXR, 3 brain tumour
classes, 6 ODIR-5K); the paper (arXiv 2511.00801) counts 23; the other 3 were not
identified."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".nii", ".gz")
"""Files a dataset folder scan takes as images (anything else in the folders is ignored)."""

_MODALITY_WORDS: tuple[tuple[str, str], ...] = (
    (r"mimic|chest|cxr|xray|x-ray|radiograph", "chest_xray"),
    (r"brain|tumou?r|mri|glioma", "brain_mri"),
    (r"odir|fundus|retina|eye", "fundus"),
)


def modality_from_name(name: str) -> str | None:
    """The modality a dataset name suggests (as in the official code: mimic/chest,
    brain/tumor, odir/fundus).

    Example:
        >>> modality_from_name("MIMIC_single_disease_selection"), modality_from_name("ODIR-5K")
        ('chest_xray', 'fundus')
    """
    low = name.lower()
    return next((m for pat, m in _MODALITY_WORDS if re.search(pat, low)), None)


@dataclass(frozen=True)
class Source:
    """One input image with its label."""

    image: str
    """Absolute path of the image file."""
    label: str
    """``normal`` or a disease name."""
    dataset: str
    """Dataset name (the folder, or the manifest's column)."""
    modality: str | None = None
    """Modality from the manifest (None: from config / dataset name)."""
    mask: str | None = None
    """Mask image path or box ``x0 y0 x1 y1``: the allowed region of adds on a normal image,
    the lesion of a diseased one."""


@dataclass(frozen=True)
class Task:
    """One (source, disease, direction) edit task."""

    task_id: str
    """``<dataset>__<stem>__<disease>__<direction>``: unique and file-system safe."""
    dataset: str
    """Dataset name."""
    modality: str
    """``chest_xray``, ``brain_mri`` or ``fundus``."""
    disease: str
    """Disease to add, or to remove."""
    direction: str
    """``add`` or ``remove``."""
    image: str
    """Source image path."""
    mask: str | None = None
    """Allowed region (add) or lesion (remove), as in :class:`Source`."""

    @property
    def stem(self) -> str:
        return _safe(Path(self.image).name.split(".")[0])

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _safe(name: str) -> str:
    return slug(name)


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def scan_folder(root: str | Path) -> list[Source]:
    """Sources of ``root`` = one dataset ``<root>/{normal,<Disease>}/*`` or a folder of them.

    Raises :class:`DataError` when no dataset (a folder with a ``normal`` or disease subfolder
    holding images) is found.
    """
    root = Path(root)
    datasets = (
        [root]
        if (root / "normal").is_dir()
        else sorted(d for d in root.iterdir() if d.is_dir() and (d / "normal").is_dir())
    )
    if not datasets and root.is_dir():
        datasets = [root]
    out = []
    for ds in datasets:
        for sub in sorted(d for d in ds.iterdir() if d.is_dir() and d.name != "masks"):
            label = "normal" if sub.name.lower() == "normal" else sub.name
            out += [Source(str(p.resolve()), label, ds.name) for p in _images(sub)]
    if not out:
        raise DataError(
            f"no images found under {root}",
            expected="<dataset>/normal/*.png and <dataset>/<Disease>/*.png",
            found=[p.name for p in root.iterdir()] if root.is_dir() else str(root),
            fix="lay the images out by label, or pass a CSV manifest",
        )
    return out


def read_manifest(path: str | Path, *, allow_outside: bool = False) -> list[Source]:
    """Sources of a CSV manifest: columns ``image`` and ``label`` (``normal`` or a disease),
    optional ``dataset`` (default: the CSV's stem), ``modality`` and ``mask``.

    Image and mask paths are taken from the CSV's folder and must stay under it (the path
    policy of :mod:`clinfuse.core.paths`) unless ``allow_outside`` is set."""
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"cannot read the manifest {path}",
            expected="a UTF-8 CSV file with columns image, label[, dataset, modality, mask]",
            found=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            fix="check the file (an empty, truncated or non-UTF-8 file cannot be read)",
        ) from None
    missing = {"image", "label"} - set(df.columns)
    if missing:
        raise DataError(
            f"manifest {path.name} lacks columns {sorted(missing)}",
            expected="image, label[, dataset, modality, mask]",
            found=list(df.columns),
        )
    base = path.parent
    out = []
    for i, r in enumerate(df.to_dict("records"), start=2):
        where = f"manifest {path} line {i}"
        if not str(r["image"]).strip() or not str(r["label"]).strip():
            raise DataError(
                f"{where} has an empty image or label",
                expected="an image path and a label",
                found=r,
            )
        img = input_path(base, r["image"], source=where, allow_outside=allow_outside)
        mask = r.get("mask") or None
        if mask and " " not in mask.strip() and "," not in mask:
            mask = str(input_path(base, mask, source=where, allow_outside=allow_outside))
        label = "normal" if r["label"].strip().lower() == "normal" else r["label"].strip()
        out.append(
            Source(str(img), label, r.get("dataset") or path.stem, r.get("modality") or None, mask)
        )
    return out


def make_tasks(
    sources: list[Source],
    modality: str = "auto",
    diseases: tuple[str, ...] = (),
    directions: tuple[str, ...] = ("add", "remove"),
) -> list[Task]:
    """Add tasks (normal x disease) and remove tasks (diseased -> normal), sorted by id.

    Diseases of the adds: ``diseases`` when given, else the disease labels of the dataset, else
    :data:`DISEASE_PRESETS` of its modality.
    """
    tasks: dict[str, Task] = {}
    ids = Slugs("task")  # "a b.png" and "a_b.png" would share a task id: refused
    by_ds: dict[str, list[Source]] = {}
    for s in sources:
        by_ds.setdefault(s.dataset, []).append(s)
    for ds, items in by_ds.items():
        mods = {s.modality for s in items if s.modality}
        mod = (
            modality if modality != "auto" else (mods.pop() if len(mods) == 1 else None)
        ) or modality_from_name(ds)
        if mod not in DISEASE_PRESETS:
            raise DataError(
                f"cannot tell the modality of dataset {ds!r}",
                expected=" | ".join(DISEASE_PRESETS),
                found=mod,
                fix="--set modality=chest_xray (or a modality column in the manifest)",
            )
        labels = tuple(dict.fromkeys(s.label for s in items if s.label != "normal"))
        add = diseases or labels or DISEASE_PRESETS[mod]
        for s in items:
            stem = _safe(Path(s.image).name.split(".")[0])
            pairs = [(d, "add") for d in add] if s.label == "normal" else [(s.label, "remove")]
            for disease, direction in pairs:
                if direction not in directions:
                    continue
                tid = f"{_safe(ds)}__{stem}__{_safe(disease)}__{direction}"
                ids.add(f"{ds}|{s.image}|{disease}|{direction}", f"image {s.image}", tid)
                tasks[tid] = Task(tid, ds, mod, disease, direction, s.image, s.mask)
    return [tasks[k] for k in sorted(tasks)]
