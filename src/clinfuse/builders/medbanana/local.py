r"""The deterministic local backend: template writer / refiner, a seeded lesion editor and a
rule judge on image metrics. Offline, no weights; the same log schema as the model path.

The editor reads the instruction: ``subtle`` / ``moderate`` / ``marked`` set the lesion contrast
(x0.5 / x1 / x1.6), ``small`` / ``large`` its size; with chance ``local_flaw_rate`` it makes a
seeded flaw, a global 8 % brightness shift on adds (off when the instruction says ``leave all
else untouched``) and inpainting without noise on removals (off with ``keep the noise grain``).
So the refiner's fixes matter and a task can succeed at round
k > 1, which is what the preference export needs.

Lesions (our design [inferred]; the official code edits with Gemini 2.5 Flash Image) are
soft-edged profiles :math:`g(d) = 1/(1 + e^{(d-r)/(0.25 r)})` blended toward white,
:math:`x' = x + a\,g\,(1-x)`, which keeps the film grain: chest X-ray opacity / effusion
(darker lucency for pneumothorax), brain MRI mass with a hypointense oedema halo, fundus
exudates / drusen clusters and a brighter, wider optic cup. Removal is
``skimage.restoration.inpaint_biharmonic`` on the lesion with the surrounding grain re-injected.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from clinfuse.builders.medbanana import prompts
from clinfuse.builders.medbanana.metrics import decide, edit_metrics, metric_scores
from clinfuse.builders.medbanana.roles import Edit, HistoryEntry, Verdict, Written, image_part
from clinfuse.builders.medbanana.sources import from_array, to_array
from clinfuse.builders.medbanana.tasks import Task
from clinfuse.llm.base import Message, canonical_request, prompt_hash

__all__ = [
    "LESION_KIND",
    "LocalEditor",
    "LocalJudge",
    "LocalWriter",
    "draw_lesion",
    "find_lesion",
    "organ_mask",
    "remove_lesion",
    "task_seed",
]

WRITER_ID = "medbanana-local-writer-v1"
EDITOR_ID = "medbanana-local-editor-v1"
JUDGE_ID = "medbanana-local-judge-v1"

LESION_KIND: dict[str, str] = {
    "Pleural_Effusion": "effusion",
    "Pneumothorax": "lucency",
    "Cardiomegaly": "opacity",
    "Enlarged_Cardiomediastinum": "opacity",
    "Fracture": "opacity",
    "Edema": "opacity",
    "glioma": "mass",
    "meningioma": "mass",
    "pituitary": "mass",
    "Diabetes": "exudates",
    "Hypertension": "exudates",
    "AMD": "drusen",
    "Glaucoma": "cup",
    "Cataract": "haze",
    "Myopia": "cup",
}
"""Disease -> lesion kind of the local editor (others: the modality's default kind)."""
_DEFAULT_KIND = {"chest_xray": "opacity", "brain_mri": "mass", "fundus": "exudates"}
_STRENGTH = {"subtle": 0.5, "moderate": 1.0, "marked": 1.6}
_SIZE = {"small": 0.7, "medium": 1.0, "large": 1.3}


def task_seed(*parts: object) -> int:
    """A stable 32-bit seed from any parts (CRC32 of their text; no Python hash seed)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def _gray(arr: np.ndarray) -> np.ndarray:
    return arr if arr.ndim == 2 else arr @ np.array([0.299, 0.587, 0.114], np.float32)


def organ_mask(arr: np.ndarray, modality: str) -> np.ndarray:
    """Where findings of ``modality`` may lie: the lung fields of a PA chest film (two
    ellipses), the brain (Otsu foreground, largest component, eroded), the retina (non-black
    disc, eroded).

    Shape:
        ``arr``: ``(H, W)`` or ``(H, W, 3)`` in [0, 1]. Output: boolean ``(H, W)``.
    """
    from scipy import ndimage

    h, w = arr.shape[:2]
    g = _gray(arr)
    if modality == "chest_xray":
        yy, xx = np.mgrid[0:h, 0:w]
        return (((xx - 0.30 * w) / (0.13 * w)) ** 2 + ((yy - 0.47 * h) / (0.26 * h)) ** 2 <= 1) | (
            ((xx - 0.70 * w) / (0.13 * w)) ** 2 + ((yy - 0.47 * h) / (0.26 * h)) ** 2 <= 1
        )
    if modality == "brain_mri":
        from skimage.filters import threshold_otsu

        fg = g > threshold_otsu(g)
    else:
        fg = g > 0.12
    lab, n = ndimage.label(fg)
    if n:
        fg = lab == (1 + int(np.argmax(ndimage.sum_labels(fg, lab, range(1, n + 1)))))
    fg = ndimage.binary_fill_holes(fg)
    return ndimage.binary_erosion(fg, iterations=max(1, int(0.05 * min(h, w))))


def _profile(d: np.ndarray, r: float, soft: float = 0.25) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(np.clip((d - r) / (soft * r), -30, 30)))).astype(np.float32)


def _toward(arr: np.ndarray, g: np.ndarray, a: float, colour=(1.0, 1.0, 1.0)) -> np.ndarray:
    if arr.ndim == 2:
        return arr + a * g * (1 - arr) if a >= 0 else arr + a * g * arr
    c = np.asarray(colour, np.float32)
    return arr + a * g[..., None] * (c - arr)


def draw_lesion(
    arr: np.ndarray,
    modality: str,
    disease: str,
    allowed: np.ndarray,
    rng: np.random.Generator,
    strength: float = 1.0,
    size: float = 1.0,
    tone_shift: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a seeded lesion of ``disease`` inside ``allowed``; return ``(edited, lesion mask)``.
    ``tone_shift`` (a flaw) scales the whole image's brightness by ``1 + tone_shift``.

    Shape:
        ``arr``: ``(H, W)`` or ``(H, W, 3)`` float in [0, 1]; both outputs have its ``(H, W)``.
    """
    from scipy import ndimage

    h, w = arr.shape[:2]
    m = min(h, w)
    kind = LESION_KIND.get(disease, _DEFAULT_KIND.get(modality, "opacity"))
    rel = {
        "opacity": 0.05,
        "effusion": 0.06,
        "lucency": 0.05,
        "mass": 0.06,
        "exudates": 0.02,
        "drusen": 0.018,
        "cup": 0.035,
        "haze": 0.16,
    }
    base_r = rel[kind] * m * size
    inner = ndimage.binary_erosion(allowed, iterations=max(1, int(base_r * 1.3)))
    pool = np.flatnonzero(inner if inner.any() else allowed)
    if pool.size == 0:
        pool = np.arange(h * w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g_all = np.zeros((h, w), np.float32)
    a = 0.22 * strength
    out = arr.astype(np.float32).copy()
    if kind in ("exudates", "drusen"):
        cy, cx = divmod(int(rng.choice(pool)), w)
        for _ in range(int(rng.integers(4, 7))):
            dy, dx = rng.normal(0, 3 * base_r, 2)
            r = base_r * rng.uniform(0.7, 1.3)
            g_all = np.maximum(g_all, _profile(np.hypot(yy - cy - dy, xx - cx - dx), r, 0.5))
        g_all *= allowed
        colour = (1.0, 0.95, 0.55) if kind == "exudates" else (0.95, 0.9, 0.7)
        out = _toward(out, g_all, 1.6 * a, colour)
    elif kind == "cup":
        sm = ndimage.gaussian_filter(_gray(arr), 0.03 * m) * allowed
        cy, cx = np.unravel_index(int(np.argmax(sm)), sm.shape)
        g_all = _profile(np.hypot(yy - cy, xx - cx), base_r * 1.4)
        out = _toward(out, g_all, 1.3 * a, (1.0, 0.95, 0.85))
    else:
        cy, cx = divmod(int(rng.choice(pool)), w)
        if kind == "effusion":  # basal: low in the lung, wide and flat
            rows = np.flatnonzero(allowed[:, cx])
            cy = int(rows.max() - 0.5 * base_r) if rows.size else cy
            d = np.hypot((yy - cy) / 0.7, (xx - cx) / 1.5)
        else:
            d = np.hypot(yy - cy, xx - cx)
        g_all = _profile(d, base_r)
        if kind == "mass":  # enhancing mass with a hypointense oedema halo
            halo = np.clip(_profile(d, 1.8 * base_r) - g_all, 0, 1)
            out = _toward(out, halo, -0.5 * a)
            g_mask, a = np.maximum(g_all, halo), 2.5 * a
        else:
            g_mask = g_all
        out = _toward(out, g_all, -a if kind == "lucency" else (0.6 * a if kind == "haze" else a))
        g_all = g_mask
    return np.clip(out * (1.0 + tone_shift), 0.0, 1.0), g_all > 0.2


def find_lesion(arr: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The most salient blob inside ``allowed`` (difference of Gaussians), as a disc mask: the
    lesion to remove when no mask was given."""
    from scipy import ndimage

    g = _gray(arr)
    m = min(g.shape)
    dog = np.abs(ndimage.gaussian_filter(g, 0.02 * m) - ndimage.gaussian_filter(g, 0.12 * m))
    cy, cx = np.unravel_index(int(np.argmax(dog * allowed)), g.shape)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    return np.hypot(yy - cy, xx - cx) <= 0.08 * m


def remove_lesion(
    arr: np.ndarray, lesion: np.ndarray, rng: np.random.Generator, regrain: bool = True
) -> np.ndarray:
    """Inpaint ``lesion`` (dilated 3 px) biharmonically from its surroundings, on a crop around
    it; with ``regrain`` Gaussian noise of the surrounding high-pass std is added back."""
    from scipy import ndimage
    from skimage.restoration import inpaint_biharmonic

    region = ndimage.binary_dilation(lesion, iterations=3)
    ys, xs = np.nonzero(region)
    pad = 12
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, arr.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, arr.shape[1])
    crop, rmask = arr[y0:y1, x0:x1], region[y0:y1, x0:x1]
    filled = inpaint_biharmonic(crop, rmask, channel_axis=-1 if crop.ndim == 3 else None)
    if regrain:
        ring = ndimage.binary_dilation(rmask, iterations=8) & ~rmask
        g = _gray(crop)
        hp = g - ndimage.gaussian_filter(g, 1.0)
        sd = float(hp[ring].std()) / 0.8 if ring.any() else 0.0
        noise = rng.normal(0.0, sd, rmask.shape).astype(np.float32) * rmask
        filled = filled + (noise[..., None] if crop.ndim == 3 else noise)
    out = arr.copy()
    out[y0:y1, x0:x1] = np.where(rmask[..., None] if crop.ndim == 3 else rmask, filled, crop)
    return np.clip(out, 0.0, 1.0)


def allowed_region(task: Task, arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The region an edit of ``task`` may touch: the given mask (add) or the lesion dilated by
    4 % of the image (remove), else the organ mask."""
    from scipy import ndimage

    if mask is None:
        return organ_mask(arr, task.modality)
    if task.direction == "remove":
        return ndimage.binary_dilation(mask, iterations=max(3, int(0.04 * min(mask.shape))))
    return mask


# ------------------------------------------------------------------------------------------
class LocalWriter:
    """Template writer; the refiner applies one fix per failure seen anywhere in the history."""

    model_id = WRITER_ID

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def _written(self, instr: str, messages: list) -> Written:
        return Written(
            instr,
            WRITER_ID,
            prompt_hash(messages, WRITER_ID),
            canonical_request(messages, WRITER_ID),
            instr,
        )

    def _text(self, task: Task, strength: str, size: str, fixes: Sequence[str]) -> str:
        mod = prompts.MODALITY_NAMES.get(task.modality, task.modality)
        disease = task.disease.replace("_", " ")
        if task.direction == "add":
            head = (
                f"Add a {strength}, {size} area of {disease} to this {mod}, where it "
                f"typically appears, blending into the surrounding tissue."
            )
        else:
            head = (
                f"Remove the {disease} finding from this {mod} so it looks normal, filling "
                f"the area with the surrounding healthy texture; add nothing new."
            )
        tail = " Keep brightness, contrast, framing and every other structure unchanged."
        return head + "".join(f" {f}" for f in fixes) + tail

    def initial(self, task: Task, source: Image.Image) -> Written:
        rng = np.random.default_rng(task_seed(self.cfg.seed, task.task_id, "writer"))
        strength = "subtle" if rng.random() < self.cfg.local_subtle_rate else "moderate"
        instr = self._text(task, strength, "medium", ())
        return self._written(instr, prompts.initial_messages(task, image_part(source)))

    def refine(self, task: Task, source: Image.Image, history: Sequence[HistoryEntry]) -> Written:
        levels = list(_STRENGTH)
        first = history[0].instruction if history else ""
        strength = next((s for s in levels if s in first), "moderate")
        size, fixes = "medium", []
        for h in history:
            code = h.reason_code
            if code in ("weak_edit", "no_edit", "low_compliance"):
                strength = levels[min(levels.index(strength) + 1, len(levels) - 1)]
            if code in ("sharp_edges", "low_realism") and "No sharp edges" not in " ".join(fixes):
                fixes.append("No sharp edges, no text: soft margins only.")
            if code in ("global_change", "fidelity", "outside_mask", "low_fidelity"):
                size = "small"
                fixes.append("Confine the change to the lesion; leave all else untouched.")
            if code == "grain" and "noise grain" not in " ".join(fixes):
                fixes.append("Keep the noise grain of the surrounding image.")
        instr = self._text(task, strength, size, list(dict.fromkeys(fixes)))
        return self._written(instr, prompts.refine_messages(task, image_part(source), history))


class LocalEditor:
    """Seeded lesion drawing (add) and inpainting (remove), steered by the instruction's words;
    unlike a model editor it reads the task (direction, disease, modality) and its mask."""

    model_id = EDITOR_ID

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def edit(
        self,
        source: Image.Image,
        instruction: str,
        seed: int,
        *,
        task: Task,
        mask: np.ndarray | None = None,
    ) -> Edit:
        low = instruction.lower()
        rng = np.random.default_rng(seed)
        flaw = rng.random() < self.cfg.local_flaw_rate
        arr = to_array(source)
        if task.direction == "add":
            strength = next((v for k, v in _STRENGTH.items() if re.search(rf"\b{k}\b", low)), 1.0)
            size = next((v for k, v in _SIZE.items() if re.search(rf"\b{k}\b", low)), 1.0)
            shift = 0.08 if flaw and "leave all else untouched" not in low else 0.0
            allowed = mask if mask is not None else organ_mask(arr, task.modality)
            out, _ = draw_lesion(
                arr, task.modality, task.disease, allowed, rng, strength, size, shift
            )
        else:
            lesion = mask if mask is not None else find_lesion(arr, organ_mask(arr, task.modality))
            out = remove_lesion(arr, lesion, rng, regrain=not flaw or "noise grain" in low)
        digest = prompt_hash([Message("user", [instruction, image_part(source)])], EDITOR_ID)
        return Edit(from_array(out), EDITOR_ID, digest)


class LocalJudge:
    """Rule judge: :func:`.metrics.edit_metrics`, :func:`.metrics.metric_scores`, and
    :func:`.metrics.decide` with every metric check on."""

    model_id = JUDGE_ID

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def judge(
        self, task: Task, source: Image.Image, edited: Image.Image, allowed: np.ndarray | None
    ) -> Verdict:
        m = edit_metrics(source, edited, allowed, self.cfg.change_tol)
        scores = metric_scores(m, self.cfg)
        ok, code, why = decide(scores, m, self.cfg, gates=True)
        digest = prompt_hash([Message("user", [image_part(source), image_part(edited)])], JUDGE_ID)
        return Verdict(
            ok, code, why, *scores.values(), metrics=m, model_id=JUDGE_ID, prompt_hash=digest
        )
