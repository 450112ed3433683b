"""Configuration of the Med-Banana builder (one flat frozen dataclass, ``--set key=value``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinfuse.core.config import check_fields

Modality = Literal["chest_xray", "brain_mri", "fundus"]
Direction = Literal["add", "remove"]

__all__ = ["Direction", "MedBananaConfig", "Modality"]


@dataclass(frozen=True)
class MedBananaConfig:
    """Med-Banana-50K data set builder (arXiv 2511.00801)."""

    data: str = "default"
    """`default` (real images installed packages ship, plus seeded diseased copies), a folder
    `<dataset>/{normal,<disease>}/*` (or a folder of such datasets), or a CSV manifest
    (columns image, label, optional dataset, modality, mask)."""
    allow_outside_paths: bool = False
    """Accept image and mask paths in a CSV manifest that lie outside the manifest's folder
    (absolute paths, ``..``); off, such a row is refused."""
    modality: Literal["auto", "chest_xray", "brain_mri", "fundus"] = "auto"
    """Modality of every dataset; auto reads it from the dataset name (mimic/chest/cxr,
    brain/tumor/mri, odir/fundus/retina) or the manifest's modality column."""
    diseases: tuple[str, ...] = ()
    """Diseases of the add tasks; empty: the disease folders of each dataset (the paper's rule),
    or the modality's presets when a dataset has normal images only."""
    directions: tuple[Direction, ...] = ("add", "remove")
    """Task kinds: add (normal image x disease) and remove (diseased image -> normal)."""
    max_side: int | None = 512
    """Longer side of the sources sent to the editor (None keeps the input size; paper: 1024)."""
    writer: str = "local"
    """Prompt writer and refiner: `local` (templates) or an llm spec, e.g.
    `gemini:gemini-2.5-pro` or `openai:gpt-4o@http://localhost:8000/v1`."""
    editor: str = "local"
    """Image editor: `local` (seeded lesions / inpainting) or an image backend spec, e.g.
    `gemini:gemini-2.5-flash-image`."""
    judge: str = "local"
    """Judge: `local` (rules on the image metrics) or an llm spec of a vision model."""
    max_rounds: int = 5
    """Rounds per task (round 1 writes, later rounds refine from the full history)."""
    min_compliance: float = 0.6
    """Threshold on the normalised instruction-compliance score (0-1)."""
    min_structure: float = 0.6
    """Threshold on the structural-plausibility score (0-1)."""
    min_realism: float = 0.6
    """Threshold on the realism score (0-1)."""
    min_fidelity: float = 0.6
    """Threshold on the fidelity-preservation score (0-1)."""
    metric_gates: bool = True
    """Apply the local image-metric checks to model judges too (always on for `judge=local`)."""
    change_tol: float = 0.03
    """Smoothed absolute intensity difference (0-1 scale) that counts a pixel as changed."""
    max_changed_fraction: float = 0.2
    """Largest share of the image that may change (more: a global change)."""
    min_ssim_outside: float = 0.95
    """Least mean SSIM outside the edited region."""
    max_changed_outside: float = 0.01
    """Largest share of changed pixels outside the edited region (minimality)."""
    min_inside: float = 0.8
    """Least share of the edited region inside the allowed mask (organ or given mask)."""
    min_roi_change: float = 0.08
    """Least 95th-percentile intensity change inside the edited region (compliance)."""
    max_edge_ratio: float = 2.5
    """Largest ratio of gradient magnitude in the edited region, edit over source (text,
    sharp edges)."""
    max_duplicate_score: float = 0.85
    """Largest copy-move score of an edited block (1: an exact copy of another place of the
    source; see `metrics.copy_move_score`)."""
    grain_range: tuple[float, ...] = (0.6, 1.6)
    """Allowed ratio of high-pass noise std in the edited region, edit over source."""
    local_subtle_rate: float = 0.4
    """Local writer: chance that a first prompt asks for a subtle (too faint) change."""
    local_flaw_rate: float = 0.25
    """Local editor: chance of a flawed edit (global brightness shift / grain lost) unless the
    prompt forbids it."""
    image_format: Literal["png", "jpeg"] = "png"
    """Format of the written images (the paper wrote JPEG q95)."""
    llm_cache: bool = True
    """Cache model answers under `<out>/llm_cache` and model edits under `<out>/image_cache`
    (keyed by prompt hash; a resumed or repeated build does not pay twice)."""
    rate_limit_per_min: float | None = None
    """Requests a minute for each model role (writer, editor, judge: one limiter each, shared by
    the threads; each process / Ray worker has its own). None: no limit."""
    executor: Literal["thread", "process", "ray", "serial"] = "thread"
    """Where tasks run: a bounded thread pool (API-bound), a process pool, Ray, or inline."""
    workers: int = 4
    """Concurrent tasks (threads / processes / Ray CPUs of a local instance)."""
    ray_address: str | None = None
    """Address of a running Ray cluster (None: a local instance)."""
    limit: int | None = None
    """Build only the first N tasks (None: all)."""
    seed: int = 0
    """Seed of the default data, the local writer, editor and the per-task streams."""
    progress: bool = True
    """Show a progress bar with tasks per minute and success rate."""

    def __post_init__(self) -> None:
        unit = {
            f"min_{k}": (0.0 <= getattr(self, f"min_{k}") <= 1.0, "in [0, 1]")
            for k in ("compliance", "structure", "realism", "fidelity", "ssim_outside", "inside")
        }
        check_fields(
            self,
            {
                **unit,
                "max_rounds": (1 <= self.max_rounds <= 20, "in [1, 20]"),
                "workers": (self.workers >= 1, ">= 1"),
                "rate_limit_per_min": (
                    self.rate_limit_per_min is None or self.rate_limit_per_min > 0,
                    "> 0 or none",
                ),
                "max_side": (self.max_side is None or self.max_side >= 32, ">= 32 or none"),
                "limit": (self.limit is None or self.limit >= 1, ">= 1 or none"),
                "directions": (len(self.directions) >= 1, "add and/or remove"),
                "grain_range": (
                    len(self.grain_range) == 2 and 0 < self.grain_range[0] < self.grain_range[1],
                    "two numbers 0 < low < high",
                ),
                "max_changed_fraction": (0 < self.max_changed_fraction <= 1, "in (0, 1]"),
                "max_duplicate_score": (0 < self.max_duplicate_score <= 1, "in (0, 1]"),
                "local_subtle_rate": (0 <= self.local_subtle_rate <= 1, "in [0, 1]"),
                "local_flaw_rate": (0 <= self.local_flaw_rate <= 1, "in [0, 1]"),
            },
        )
