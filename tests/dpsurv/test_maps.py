"""Patch prototype assignment maps: label grids from patch coordinates and their PNG rendering."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from clinfuse.core.errors import DataError
from clinfuse.methods.dpsurv import maps
from clinfuse.methods.dpsurv.maps import (
    BACKGROUND,
    assignment_labels,
    assignment_map_array,
    assignment_map_png,
    component_palette,
)


def planted_slide(step: int = 512, seed: int = 0):
    """Patches on a 12 x 20 grid with tissue holes, offset origin, shuffled order."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(12), np.arange(20), indexing="ij")
    keep = rng.random(rows.shape) < 0.7
    keep[0, 0] = keep[11, 19] = True  # pin the extent
    r, c = rows[keep], cols[keep]
    labels = (r // 3 + 2 * (c // 5)) % 5
    coords = np.stack([1000 + c * step, 3000 + r * step], axis=1)
    perm = rng.permutation(len(r))
    return coords[perm], labels[perm], r[perm], c[perm]


def test_labels_are_argmax() -> None:
    q = torch.softmax(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    assert np.array_equal(assignment_labels(q), q.argmax(1).numpy())
    with pytest.raises(DataError):
        assignment_labels(np.zeros(5))


def test_array_puts_each_label_at_its_coordinate() -> None:
    coords, labels, r, c = planted_slide()
    grid = assignment_map_array(coords, labels, patch_size=256)
    assert grid.shape == (12, 20)
    assert np.array_equal(grid[r, c], labels)
    # every other cell is background, and there are exactly as many patches as labelled cells
    assert (grid >= 0).sum() == len(labels)
    assert set(np.unique(grid[grid < 0])) <= {BACKGROUND}
    # torch inputs give the same grid; a single patch falls back to one cell
    same = assignment_map_array(torch.from_numpy(coords), torch.from_numpy(labels))
    assert np.array_equal(same, grid)
    assert assignment_map_array(np.array([[77, 88]]), np.array([4])).tolist() == [[4]]


def test_array_without_coords_is_square_in_patch_order() -> None:
    labels = np.arange(10) % 3
    grid = assignment_map_array(None, labels)
    assert grid.shape == (3, 4)
    assert np.array_equal(grid.reshape(-1)[:10], labels)
    assert (grid.reshape(-1)[10:] == BACKGROUND).all()


def test_array_errors() -> None:
    with pytest.raises(DataError, match="do not match"):
        assignment_map_array(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(DataError, match="not lie on a grid"):
        assignment_map_array(
            np.array([[0.0, 0.0], [1e-3, 0.0], [1e5, 1e5]]), np.zeros(3, dtype=int)
        )


def test_palette_is_fixed_and_distinct() -> None:
    p30 = component_palette(30)
    assert np.array_equal(component_palette(6), p30[:6])  # colour depends on the component only
    q = np.round(p30 * 255).astype(int)
    assert len({tuple(v) for v in q}) == 30


def test_png_size_and_component_colours(tmp_path) -> None:
    coords, labels, _, _ = planted_slide()
    n_comp = 7  # components 5 and 6 are absent from the slide: legend only
    out = assignment_map_png(
        coords, labels, tmp_path / "maps" / "slide.png", n_components=n_comp, title="TCGA-XX"
    )
    assert out.exists()
    img = imread(out)[..., :3]
    h, w = img.shape[:2]
    assert 150 <= h <= 700 and 450 <= w <= 1000
    pix = np.round(img.reshape(-1, 3) * 255).astype(int)
    counts = {}
    for c, col in enumerate(np.round(component_palette(n_comp) * 255).astype(int)):
        counts[c] = int((np.abs(pix - col).max(1) <= 1).sum())
    # every present component fills an area about proportional to its patch count
    n_lab = np.bincount(labels, minlength=n_comp)
    for c in range(5):
        assert counts[c] > 50 * n_lab[c]
    # absent components appear only as a legend swatch, far smaller than any map region
    for c in (5, 6):
        assert 0 < counts[c] < 0.2 * min(counts[k] for k in range(5))
    # the white background appears (tissue holes)
    assert (pix == 255).all(1).sum() > 0
    assert [p.name for p in out.parent.iterdir()] == ["slide.png"]  # no temp file left


def test_png_write_is_atomic(tmp_path, monkeypatch) -> None:
    coords, labels, _, _ = planted_slide()
    target = tmp_path / "slide.png"
    target.write_bytes(b"old")

    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(maps.Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        assignment_map_png(coords, labels, target, n_components=5)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["slide.png"]
    with pytest.raises(DataError, match="outside the prototype range"):
        assignment_map_png(coords, labels, tmp_path / "x.png", n_components=3)


def test_doctests() -> None:
    result = doctest.testmod(maps)
    assert result.failed == 0 and result.attempted >= 2
