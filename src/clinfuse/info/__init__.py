"""Matrix-based Renyi entropy, joint entropy and mutual information (exact, low-rank, randomized).

Example:
    >>> import torch
    >>> from clinfuse.info import entropy_of
    >>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> h_exact = entropy_of(x)
    >>> h_low = entropy_of(x, rank=10, solver="randomized")
    >>> bool(h_low >= h_exact)
    True
"""

from __future__ import annotations

from clinfuse.info.renyi import (
    entropy_of,
    gaussian_gram,
    joint_entropy,
    knn_sigma,
    label_gram,
    mutual_information,
    pairwise_sq_dists,
    renyi_entropy,
    trace_normalize,
)
from clinfuse.info.spectral import SOLVERS, Solver, topk_eigvalsh

__all__ = [
    "SOLVERS",
    "Solver",
    "entropy_of",
    "gaussian_gram",
    "joint_entropy",
    "knn_sigma",
    "label_gram",
    "mutual_information",
    "pairwise_sq_dists",
    "renyi_entropy",
    "topk_eigvalsh",
    "trace_normalize",
]
