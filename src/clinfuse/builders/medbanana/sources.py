"""Reading source images (DICOM, NIfTI, PNG/JPEG), masks, and the embedded default images.

The default input holds three real images that installed packages ship: the PA chest
radiograph ``RG1_UNCR.dcm`` of ``pydicom-data`` (MONOCHROME1, inverted here), the CC0 fundus
photograph ``retina.jpg`` of scikit-image, and an axial slice of nilearn's MNI ICBM152 T1
template (an average brain, not one patient). Each gets one diseased copy made by the local
editor with a seeded lesion whose mask is kept, so remove tasks have a planted ground truth.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from clinfuse.core.errors import DataError, require
from clinfuse.core.packages import package_file

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_FILES",
    "default_images",
    "encode_image",
    "from_array",
    "load_image",
    "load_mask",
    "to_array",
    "write_default_inputs",
]

DEFAULT_STEMS = {"chest_xray": "rg1_uncr", "fundus": "retina", "brain_mri": "mni152_t1_axial"}
"""File stems of the default images in the written input."""

DEFAULT_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chest_xray": ("data_store", ("data", "RG1_UNCR.dcm")),
    "fundus": ("skimage", ("data", "retina.jpg")),
    "brain_mri": (
        "nilearn",
        ("datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
    ),
}
"""Modality -> (package, path inside the package) of the default images."""

DEFAULT_DISEASE: dict[str, str] = {
    "chest_xray": "Lung_Opacity",
    "brain_mri": "glioma",
    "fundus": "Diabetes",
}
"""The disease of the seeded diseased copy of each default image."""


def _window8(arr: np.ndarray, invert: bool = False) -> np.ndarray:
    """Scale to 8 bits between the 0.5 and 99.5 percentiles (optionally inverted)."""
    a = arr.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip((a - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    if invert:
        a = 1.0 - a
    return np.round(a * 255).astype(np.uint8)


def _read_dicom(path: Path) -> Image.Image:
    pydicom = require("pydicom", "medbanana")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad input file
        raise DataError(f"cannot read DICOM {path}", found=repr(exc)) from exc
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown"))
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises several types for this
        raise DataError(
            f"cannot decode the pixels of {path.name}: unsupported transfer syntax {syntax}",
            expected="an uncompressed or decodable DICOM",
            found=f"{syntax}: {exc}",
            fix="install pylibjpeg / gdcm, or convert with `dcmdjpeg`",
        ) from exc
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        arr = arr[arr.shape[0] // 2]
    if arr.ndim == 3:
        return Image.fromarray(np.asarray(arr[..., :3], dtype=np.uint8), "RGB")
    invert = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    return Image.fromarray(_window8(arr, invert=invert), "L")


def _read_nifti(path: Path) -> Image.Image:
    nib = require("nibabel", "medbanana")
    try:
        vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read NIfTI {path}", found=repr(exc)) from exc
    if vol.ndim == 4:
        vol = vol[..., 0]
    sl = vol[:, :, int(vol.shape[2] * 0.55)] if vol.ndim == 3 else vol
    return Image.fromarray(_window8(np.rot90(sl)), "L")  # anterior up, RAS -> radiological


def _read_pil(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            img = im
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(
            f"cannot read image {path.name}",
            expected="a PNG, JPEG, TIFF, DICOM or NIfTI file",
            found=repr(exc),
        ) from exc
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("I;16", "I;16B", "I", "F"):
        return Image.fromarray(_window8(np.asarray(img)), "L")
    return img.convert("RGB")


_READERS = {".dcm": _read_dicom, ".dicom": _read_dicom, ".nii": _read_nifti, ".gz": _read_nifti}


def load_image(path: str | Path, max_side: int | None = 512) -> Image.Image:
    """Read one source image as an 8-bit ``L`` or ``RGB`` PIL image, longer side <= max_side.

    DICOM: the pixel data windowed to 8 bits (MONOCHROME1 inverted, multi-frame: middle frame);
    an undecodable transfer syntax raises :class:`DataError`. NIfTI: an axial slice. The size
    before resizing is kept in ``img.info["orig_size"]`` (mask boxes are given in it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"source image not found: {path}", fix="check the path / manifest")
    reader = _READERS.get(path.suffix.lower(), _read_pil)
    if path.suffix.lower() == ".gz" and not path.name.lower().endswith(".nii.gz"):
        reader = _read_pil
    img = reader(path)
    orig = img.size
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    img.info["orig_size"] = orig
    return img


def load_mask(
    spec: str | None,
    size: tuple[int, int],
    orig_size: tuple[int, int] | None = None,
    base: Path | None = None,
) -> np.ndarray | None:
    """A boolean mask of shape ``(H, W)`` from a mask image path or a box ``"x0 y0 x1 y1"``
    (pixels of the original image, scaled from ``orig_size`` to ``size``).

    A box outside the image, or a mask image of another size, raises :class:`DataError`.
    """
    if spec is None or str(spec).strip() in ("", "nan", "None"):
        return None
    w, h = size
    ow, oh = orig_size or size
    text = str(spec).replace(",", " ").split()
    if len(text) == 4 and all(t.lstrip("-").replace(".", "", 1).isdigit() for t in text):
        x0, y0, x1, y1 = (float(t) for t in text)
        if not (0 <= x0 < x1 <= ow and 0 <= y0 < y1 <= oh):
            raise DataError(
                "mask box lies outside the image",
                expected=f"0 <= x0 < x1 <= {ow}, 0 <= y0 < y1 <= {oh}",
                found=spec,
            )
        sx, sy = w / ow, h / oh
        m = np.zeros((h, w), bool)
        m[
            int(y0 * sy) : max(int(y0 * sy) + 1, round(y1 * sy)),
            int(x0 * sx) : max(int(x0 * sx) + 1, round(x1 * sx)),
        ] = True
        return m
    path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
    try:
        with Image.open(path) as im:
            mimg = im.convert("L")
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read mask {path}", found=repr(exc)) from exc
    if mimg.size != (ow, oh) and mimg.size != (w, h):
        raise DataError(
            "mask does not match its image",
            expected=f"a {ow}x{oh} (or {w}x{h}) mask",
            found=f"{mimg.size[0]}x{mimg.size[1]}",
        )
    if mimg.size != (w, h):
        mimg = mimg.resize((w, h), Image.Resampling.NEAREST)
    m = np.asarray(mimg) > 0
    if not m.any():
        raise DataError(f"mask {path} is empty", expected="some non-zero pixels")
    return m


def to_array(img: Image.Image) -> np.ndarray:
    """8-bit PIL image -> float32 in [0, 1], ``(H, W)`` or ``(H, W, 3)``."""
    return np.asarray(img, dtype=np.float32) / 255.0


def from_array(arr: np.ndarray) -> Image.Image:
    """Inverse of :func:`to_array` (clipped and rounded to 8 bits)."""
    a = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(a, "RGB" if a.ndim == 3 else "L")


def encode_image(img: Image.Image, fmt: str = "png") -> bytes:
    """PNG (lossless) or JPEG q95 bytes of ``img``."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=95)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def default_images(max_side: int | None = 512) -> dict[str, tuple[str, Image.Image]]:
    """Modality -> (stem, image) of the packaged real images that are installed."""
    out = {}
    for modality, (package, parts) in DEFAULT_FILES.items():
        file = package_file(package, *parts)
        if file is None:
            log.info("medbanana: %s not installed, no default %s image", package, modality)
            continue
        out[modality] = (DEFAULT_STEMS[modality], load_image(file, max_side))
    if not out:
        raise DataError(
            "no default images: none of pydicom-data, scikit-image, nilearn is installed",
            fix="pip install 'clinfuse[medbanana]' or pass --data",
        )
    return out


def write_default_inputs(folder: str | Path, max_side: int | None = 512, seed: int = 0) -> Path:
    """Write the default input under ``folder`` and return its ``manifest.csv``.

    Per modality: ``<modality>/normal/<stem>.png``, a seeded diseased copy
    ``<modality>/<Disease>/<stem>-synth.png`` with its lesion mask in ``<modality>/masks/``.
    """
    import pandas as pd

    from clinfuse.builders.medbanana.local import draw_lesion, organ_mask
    from clinfuse.core.runs import atomic_path

    folder = Path(folder)
    rows = []
    for k, (modality, (stem, img)) in enumerate(default_images(max_side).items()):
        disease = DEFAULT_DISEASE[modality]
        normal = folder / modality / "normal" / f"{stem}.png"
        sick = folder / modality / disease / f"{stem}-synth.png"
        mask_path = folder / modality / "masks" / f"{stem}-synth.png"
        arr = to_array(img)
        rng = np.random.default_rng([seed, 7919, k])
        edited, roi = draw_lesion(arr, modality, disease, organ_mask(arr, modality), rng, 1.3)
        mask_img = Image.fromarray((roi * 255).astype(np.uint8), "L")
        for path, im in ((normal, img), (sick, from_array(edited)), (mask_path, mask_img)):
            with atomic_path(path) as tmp:
                im.save(tmp, format="PNG")
        rel = lambda p: str(p.relative_to(folder))  # noqa: E731
        rows += [
            {
                "image": rel(normal),
                "label": "normal",
                "dataset": modality,
                "modality": modality,
                "mask": "",
            },
            {
                "image": rel(sick),
                "label": disease,
                "dataset": modality,
                "modality": modality,
                "mask": rel(mask_path),
            },
        ]
    manifest = folder / "manifest.csv"
    with atomic_path(manifest) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    return manifest
