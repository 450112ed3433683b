"""Patch prototype assignment maps: ``argmax_c q_mc`` drawn at the patch coordinates of a slide.

The PANTHER responsibilities ``q (M, C)`` of :func:`clinfuse.methods.dpsurv.proto.panther_em`
assign every patch to a prototype. :func:`assignment_map_array` lays the labels on a grid
inferred from the patch coordinates (level-0 pixels of the patch corners, CLAM/TRIDENT
``coords``); :func:`assignment_map_png` renders it with one fixed colour per prototype, so the
same prototype has the same colour on every slide.
"""

from __future__ import annotations

import colorsys
import logging
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from clinfuse.core.errors import DataError
from clinfuse.core.runs import atomic_path

log = logging.getLogger(__name__)

BACKGROUND = -1
"""Grid value of cells without a patch."""
MAX_GRID_CELLS = 50_000_000
"""Largest grid :func:`assignment_map_array` builds (jittered coordinates would explode it)."""


def _numpy(a: object, what: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise DataError(f"{what} must be a numpy array or torch tensor", found=type(a).__name__)


def assignment_labels(q: torch.Tensor | np.ndarray) -> np.ndarray:
    """Prototype of each patch, ``argmax_c q_mc``.

    Shape:
        q: ``(M, C)``. Output: ``(M,)`` int64.

    Example:
        >>> assignment_labels(np.array([[0.9, 0.1], [0.2, 0.8]]))
        array([0, 1])
    """
    q = _numpy(q, "q")
    if q.ndim != 2 or q.shape[1] == 0:
        raise DataError("q must be (M, C) responsibilities", expected="(M, C)", found=q.shape)
    return q.argmax(axis=1).astype(np.int64)


def component_palette(n_components: int) -> np.ndarray:
    """Fixed RGB colour of each prototype: tab20 (its 10 strong hues, then their light
    variants) for the first 20, golden-ratio hues after.

    The colour of prototype ``c`` depends on ``c`` only (not on ``n_components`` or on which
    prototypes a slide contains), so maps of different slides are comparable.

    Shape:
        Output: ``(n_components, 3)`` floats in ``[0, 1]``, pairwise distinct.
    """
    from matplotlib import colormaps

    tab20 = colormaps["tab20"].colors
    tab20 = tab20[0::2] + tab20[1::2]  # P0..P9 get ten clearly different hues
    cols = []
    for c in range(n_components):
        if c < len(tab20):
            cols.append(tab20[c])
        else:  # golden-ratio hue walk, alternating lightness
            h = (0.61803398875 * (c - len(tab20))) % 1.0
            cols.append(colorsys.hls_to_rgb(h, 0.35 + 0.3 * (c % 2), 0.75))
    return np.asarray(cols, dtype=np.float64).reshape(n_components, 3)


def _grid_step(v: np.ndarray, fallback: float) -> float:
    u = np.unique(v)
    d = np.diff(u)
    d = d[d > 0]
    return float(d.min()) if d.size else float(fallback)


def assignment_map_array(
    coords: torch.Tensor | np.ndarray | None,
    labels: torch.Tensor | np.ndarray,
    patch_size: int = 256,
) -> np.ndarray:
    """Labels laid on a patch grid: cell ``(row, col)`` holds the label of the patch there.

    The grid step is the smallest positive difference between distinct x (and y) coordinates,
    taken over both axes (square patches); ``patch_size`` is the step when it cannot be inferred
    (a single row and column). Cell of patch ``m``: ``round((coords[m] - min) / step)``,
    x -> column, y -> row. When two patches fall in one cell the later one wins (logged).

    When ``coords`` is None (features without coordinates, e.g. bare ``.pt`` bags) the patches
    are laid out in their stored order, row-major on a ``ceil(sqrt(M))``-wide square; such a map
    shows proportions, not tissue layout.

    Shape:
        coords: ``(M, 2)`` as ``(x, y)``; labels: ``(M,)``. Output: ``(H, W)`` int64, ``-1`` where
        there is no patch.

    Example:
        >>> assignment_map_array(np.array([[0, 0], [512, 0], [512, 512]]), np.array([3, 1, 2]))
        array([[ 3,  1],
               [-1,  2]])
    """
    labels = _numpy(labels, "labels").astype(np.int64).reshape(-1)
    m = labels.shape[0]
    if m == 0:
        raise DataError("no patches to map", expected="at least one label", found="0 labels")
    if coords is None:
        w = max(1, math.ceil(math.sqrt(m)))
        h = math.ceil(m / w)
        grid = np.full(h * w, BACKGROUND, dtype=np.int64)
        grid[:m] = labels
        return grid.reshape(h, w)
    xy = _numpy(coords, "coords").astype(np.float64)
    if xy.shape != (m, 2):
        raise DataError(
            "coords do not match the labels",
            expected=f"({m}, 2) patch coordinates (x, y)",
            found=xy.shape,
            fix="pass the 'coords' dataset of the same .h5 file as the features",
        )
    if not np.isfinite(xy).all():
        raise DataError("coords contain NaN/inf", expected="finite coordinates", found="NaN/inf")
    fx = _grid_step(xy[:, 0], np.inf)
    fy = _grid_step(xy[:, 1], np.inf)
    step = min(fx, fy)
    if not np.isfinite(step):
        step = float(patch_size)
    idx = np.rint((xy - xy.min(axis=0)) / step).astype(np.int64)
    w, h = int(idx[:, 0].max()) + 1, int(idx[:, 1].max()) + 1
    if h * w > MAX_GRID_CELLS:
        raise DataError(
            "patch coordinates do not lie on a grid",
            expected=f"at most {MAX_GRID_CELLS} cells",
            found=f"{h} x {w} cells with inferred step {step:g}",
            fix="pass level-0 patch-corner coordinates (CLAM/TRIDENT 'coords')",
        )
    grid = np.full((h, w), BACKGROUND, dtype=np.int64)
    grid[idx[:, 1], idx[:, 0]] = labels
    n_cells = len(np.unique(idx[:, 1] * w + idx[:, 0]))
    if n_cells < m:
        log.info("assignment map: %d patches share a grid cell (later ones shown)", m - n_cells)
    return grid


def assignment_map_png(
    coords: torch.Tensor | np.ndarray | None,
    labels: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    n_components: int,
    patch_size: int = 256,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write the assignment map of one slide as a PNG (atomic: temporary file, then rename).

    One square per patch at its grid cell (:func:`assignment_map_array`), coloured by
    :func:`component_palette`, white background, a legend "P0".."P{C-1}" of all prototypes.
    The figure is about 6 inches on its longer side plus the legend (``dpi`` pixels per inch).

    Shape:
        coords: ``(M, 2)`` or None; labels: ``(M,)`` in ``[0, n_components)``.
    """
    grid = assignment_map_array(coords, labels, patch_size)
    lab = _numpy(labels, "labels").reshape(-1)
    if n_components < 1 or lab.min() < 0 or lab.max() >= n_components:
        raise DataError(
            "labels outside the prototype range",
            expected=f"integers in [0, {n_components})",
            found=f"[{int(lab.min())}, {int(lab.max())}]",
            fix="pass n_components = number of prototypes C",
        )
    pal = component_palette(n_components)
    rgb = np.ones((*grid.shape, 3), dtype=np.float64)
    on = grid >= 0
    rgb[on] = pal[grid[on]]
    h, w = grid.shape
    scale = 6.0 / max(h, w)
    fig_w, fig_h = max(w * scale, 1.5) + 1.6, max(h * scale, 1.5) + 0.6
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
    ax = fig.add_axes((0.02, 0.02, (fig_w - 1.6) / fig_w - 0.02, (fig_h - 0.5) / fig_h - 0.02))
    ax.imshow(rgb, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    handles = [
        Patch(facecolor=pal[c], edgecolor="none", label=f"P{c}") for c in range(n_components)
    ]
    fig.legend(
        handles=handles,
        loc="center right",
        fontsize=7,
        frameon=False,
        ncols=1 if n_components <= 24 else 2,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
