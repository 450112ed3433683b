"""clinfuse.robustness: seeded test-time corruptions (feature tensors, table cells) and
severity sweeps.

Never imports ``clinfuse.methods``: any model is evaluated through a callback.
"""

from __future__ import annotations

from clinfuse.robustness.corruptions import (
    CORRUPTIONS,
    MODALITIES,
    SPEC_GRAMMAR,
    UNK_TOKEN_ID,
    Compose,
    Corruption,
    Features,
    GaussianNoise,
    Lengths,
    ModalityCorruption,
    ModalityDrop,
    RandomMissing,
    make_corruption,
    mask_token_ids,
    parse_corruption,
    valid_frames,
)
from clinfuse.robustness.sweep import (
    SWEEP_COLUMNS,
    plot_sweep,
    severity_sweep,
    sweep_severities,
    write_sweep,
)

__all__ = [
    "CORRUPTIONS",
    "MODALITIES",
    "SPEC_GRAMMAR",
    "SWEEP_COLUMNS",
    "UNK_TOKEN_ID",
    "Compose",
    "Corruption",
    "Features",
    "GaussianNoise",
    "Lengths",
    "ModalityCorruption",
    "ModalityDrop",
    "RandomMissing",
    "make_corruption",
    "mask_token_ids",
    "parse_corruption",
    "plot_sweep",
    "severity_sweep",
    "sweep_severities",
    "valid_frames",
    "write_sweep",
]
