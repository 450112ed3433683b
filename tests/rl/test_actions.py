"""ActionGrid: bins <-> ids, quantile fits on planted doses, the support filter, nearest cells."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl import actions
from clinfuse.rl.actions import ZERO_EDGE, ActionGrid, support_mask

NAMES = ("kcal_per_kg", "protein_per_kg", "water_ml_per_kg")


def grid3(cells=None) -> ActionGrid:
    """3 x 4 x 2 bins: kcal edges 0+, 10; protein 0+, 0.5, 1.0; water 5."""
    return ActionGrid(
        NAMES,
        edges=([ZERO_EDGE, 10.0], [ZERO_EDGE, 0.5, 1.0], [5.0]),
        centers=([0.0, 5.0, 20.0], [0.0, 0.3, 0.8, 1.5], [2.0, 8.0]),
        cells=cells,
    )


def test_full_product_is_row_major_and_round_trips() -> None:
    g = grid3()
    assert g.n_actions == 24 and g.n_bins == (3, 4, 2) and g.cells is None
    rng = np.random.default_rng(0)
    b = np.stack([rng.integers(0, k, 500) for k in g.n_bins], axis=1)
    ids = g.encode_bins(b)
    np.testing.assert_array_equal(ids, np.ravel_multi_index(tuple(b.T), g.n_bins))
    np.testing.assert_array_equal(g.decode(ids), b)
    np.testing.assert_array_equal(g.encode_bins(g.decode(np.arange(24))), np.arange(24))


def test_bins_follow_searchsorted_right() -> None:
    g = grid3()
    v = np.array(
        [
            [0.0, 0.0, 0.0],  # exact zeros -> zero bins
            [1e-9, 0.5, 5.0],  # tiny dose leaves the zero bin; values on an edge go up
            [9.999, 0.49, 4.99],
            [10.0, 1.0, 100.0],
        ]
    )
    assert g.bins(v).tolist() == [[0, 0, 0], [1, 2, 1], [1, 1, 0], [2, 3, 1]]
    ids = g.encode(v)
    assert ids.tolist() == [0, 13, 10, 23]  # (b0 * 4 + b1) * 2 + b2
    np.testing.assert_array_equal(
        g.values(ids), [[0, 0, 2], [5, 0.8, 8], [5, 0.3, 2], [20, 1.5, 8]]
    )


def test_fit_recovers_planted_quantile_edges_and_medians() -> None:
    rng = np.random.default_rng(1)
    # kcal: 25 zeros + four clusters of ten doses; protein: two clusters, no zero bin
    kcal = np.concatenate([np.zeros(25), np.arange(1.0, 41.0)])
    protein = np.concatenate([np.full(30, 0.2), np.full(35, 1.2)])
    water = np.concatenate([np.zeros(65 - 40), rng.uniform(1, 2, 40)])
    x = rng.permutation(np.stack([kcal, protein, water], axis=1))
    g = ActionGrid.fit(x, NAMES, n_bins=(4, 2, 1), zero_bin=True)
    # linear quantiles of 1..40 at 1/4, 2/4, 3/4: 10.75, 20.5, 30.25 (hand-computed), raised to
    # the next observed dose: 11, 21, 31 -- each planted cluster gets its own bin
    np.testing.assert_allclose(
        np.quantile(np.arange(1.0, 41.0), [0.25, 0.5, 0.75]), [10.75, 20.5, 30.25]
    )
    assert g.edges[0].tolist() == [ZERO_EDGE, 11.0, 21.0, 31.0]
    assert g.centers[0].tolist() == [0.0, 5.5, 15.5, 25.5, 35.5]
    assert g.edges[1].tolist() == [ZERO_EDGE, 1.2]  # no zeros: the zero bin stays empty
    assert g.centers[1].tolist() == [0.0, 0.2, 1.2]
    assert g.edges[2].tolist() == [ZERO_EDGE]  # one quantile bin: zero / non-zero
    assert g.centers[2][1] == pytest.approx(np.median(water[water > 0]))
    assert g.n_actions == 5 * 3 * 2 and g.cells is None
    counts = np.bincount(g.bins(x)[:, 0])
    assert counts.tolist() == [25, 10, 10, 10, 10]


def test_fit_with_ties_merges_bins_but_never_leaves_one_empty() -> None:
    x = np.array([[1.0]] * 20 + [[2.0]] * 30 + [[3.0]] * 10)
    g = ActionGrid.fit(x, ["kcal"], n_bins=4, zero_bin=False)
    # linear quantiles 1, 2, 2 -> edges {2}: the edge at the minimum would leave bin 0 empty,
    # the tied ones merge
    assert g.edges[0].tolist() == [2.0]
    assert np.all(np.bincount(g.bins(x)[:, 0], minlength=g.n_bins[0]) > 0)
    x = np.array([[0.0], [1.0], [10.0]])
    g = ActionGrid.fit(x, ["kcal"], n_bins=8)
    assert np.all(np.bincount(g.bins(x)[:, 0], minlength=g.n_bins[0]) > 0)
    g = ActionGrid.fit(np.zeros((4, 1)), ["kcal"], n_bins=3)
    assert g.n_actions == 1 and g.encode([[0.0]]).tolist() == [0]


def planted_support() -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    """Doses 0, 1, 3 in two dimensions with planted counts per bin pair: fitted with zero bin
    + 2 quantile bins the edges are (0+, 3) in both (medians of the non-zero doses: 2 -> 3, 3)."""
    counts = {(0, 0): 6, (1, 1): 3, (2, 2): 5, (1, 2): 4, (2, 0): 2, (0, 2): 1}
    level = {0: 0.0, 1: 1.0, 2: 3.0}
    rows = [[level[a], level[b]] for (a, b), c in counts.items() for _ in range(c)]
    return np.array(rows), counts


def test_support_filter_drops_rare_cells() -> None:
    x, counts = planted_support()
    g = ActionGrid.fit(x, ["kcal", "protein"], n_bins=2, min_support=3)
    assert g.n_bins == (3, 3) and g.edges[0].tolist() == g.edges[1].tolist() == [ZERO_EDGE, 3.0]
    assert g.cells.tolist() == [[0, 0], [1, 1], [1, 2], [2, 2]]  # count >= 3, row-major
    assert g.n_actions == 4
    b = g.bins(x)
    supported = np.array([counts[tuple(row)] >= 3 for row in b.tolist()])
    ids = g.encode_bins(b[supported])
    np.testing.assert_array_equal(g.support(ids), [6, 3, 4, 5])
    assert support_mask(ids, g.n_actions, 5).tolist() == [True, False, False, True]
    with pytest.raises(DataError, match=r"dose bins \[2, 0\] at row 1 are not an admissible"):
        g.encode([[1.0, 1.0], [3.0, 0.0]])
    everything = ActionGrid.fit(x, ["kcal", "protein"], n_bins=2, min_support=1)
    assert everything.n_actions == 6
    with pytest.raises(DataError, match="no bin combination is seen 7 times"):
        ActionGrid.fit(x, ["kcal", "protein"], n_bins=2, min_support=7)


def test_nearest_maps_to_nearest_admissible_cell_ties_to_lower_id() -> None:
    cells = np.array([[0, 0, 0], [1, 1, 0], [1, 3, 1], [2, 0, 1], [2, 2, 0]])
    g = grid3(cells)
    assert g.n_actions == 5
    b = np.array(
        [
            [1, 1, 0],  # admissible: id 1
            [1, 2, 0],  # L1 to ids: 3, 1, 2, 4, 1 -> tie 1 vs 4 -> id 1
            [2, 1, 1],  # 4, 2, 3, 1, 2 -> id 3
            [0, 3, 1],  # 4, 4, 1, 5, 4 -> id 2
            [0, 1, 1],  # 2, 2, 3, 3, 4 -> tie id 0 vs 1 -> id 0
        ]
    )
    brute = np.abs(b[:, None] - cells[None]).sum(-1).argmin(1)
    assert g.encode_bins(b, nearest=True).tolist() == [1, 1, 3, 2, 0] == brute.tolist()
    with pytest.raises(DataError, match=r"row 1 are not an admissible action \(4 rows in all\)"):
        g.encode_bins(b)


def test_decode_and_inputs_are_checked() -> None:
    g = grid3()
    for bad in ([24], [-1], [0, 3, 99]):
        with pytest.raises(DataError, match="action id outside the grid"):
            g.decode(bad)
    with pytest.raises(DataError, match="integer"):
        g.values(np.array([1.5]))
    with pytest.raises(DataError, match="bin index outside the grid at row 0"):
        g.encode_bins([[3, 0, 0]])
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        g.encode([[1.0, 2.0]])
    with pytest.raises(DataError, match="missing dose at row 1"):
        g.encode([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(DataError, match="negative dose in 'kcal'"):
        ActionGrid.fit([[1.0], [-2.0]], ["kcal"])
    assert ActionGrid.fit([[1.0], [-2.0], [3.0]], ["dx"], n_bins=2, zero_bin=False).n_actions == 2
    with pytest.raises(ConfigError, match="n_bins"):
        ActionGrid.fit([[1.0]], ["kcal"], n_bins=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"edges": ([2.0, 1.0], [ZERO_EDGE, 0.5, 1.0], [5.0])}, "strictly increasing"),
        ({"centers": ([0.0, 5.0], [0.0, 0.3, 0.8, 1.5], [2.0, 8.0])}, "one center per bin"),
        ({"cells": np.array([[1, 0, 0], [0, 0, 0]])}, "sorted row-major"),
        ({"cells": np.array([[0, 0, 0], [0, 0, 0]])}, "sorted row-major"),
        ({"cells": np.array([[0, 0, 2]])}, "outside the bins"),
        ({"names": ("a", "a", "b")}, "distinct name"),
    ],
)
def test_malformed_grids_are_refused(kwargs, message) -> None:
    base = {
        "names": NAMES,
        "edges": ([ZERO_EDGE, 10.0], [ZERO_EDGE, 0.5, 1.0], [5.0]),
        "centers": ([0.0, 5.0, 20.0], [0.0, 0.3, 0.8, 1.5], [2.0, 8.0]),
    }
    with pytest.raises(ConfigError, match=message):
        ActionGrid(**{**base, **kwargs})


def test_dict_round_trip_through_json_and_describe() -> None:
    x, _ = planted_support()
    for g in (grid3(), ActionGrid.fit(x, ["kcal", "protein"], n_bins=2, min_support=3)):
        back = ActionGrid.from_dict(json.loads(json.dumps(g.to_dict())))
        assert back == g and back.edges[0][0] == ZERO_EDGE
        table = g.describe()
        assert len(table) == g.n_actions and table.index.name == "action"
        ids = np.arange(g.n_actions)
        np.testing.assert_array_equal(table[list(g.names)].to_numpy(), g.values(ids))
        np.testing.assert_array_equal(
            table[[f"{n}_bin" for n in g.names]].to_numpy(), g.decode(ids)
        )
        name = g.names[0]
        row = table.iloc[-1]  # the last bin is [last edge, inf)
        assert row[f"{name}_low"] == g.edges[0][-1] and row[f"{name}_high"] == np.inf
    assert grid3() != grid3(np.array([[0, 0, 0]]))
    with pytest.raises(DataError, match="lacks"):
        ActionGrid.from_dict({"names": ["a"]})


def test_grid_is_immutable() -> None:
    g = grid3()
    with pytest.raises(ValueError):
        g.edges[0][0] = 3.0
    with pytest.raises(AttributeError):
        g.names = ("x",)  # type: ignore[misc]


def test_docstring_examples() -> None:
    result = doctest.testmod(actions)
    assert result.attempted > 0 and result.failed == 0
