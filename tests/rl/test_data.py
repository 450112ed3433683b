"""Trajectories: every malformed input names the patient and step; structure on a tiny data set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from clinfuse.core.errors import DataError
from clinfuse.rl.data import Trajectories


def arrays(**change: Any) -> dict[str, Any]:
    """Patient 5 (3 steps, dies) then patient 8 (4 steps, record stops); 3 actions."""
    base: dict[str, Any] = {
        "obs": np.arange(14, dtype=np.float32).reshape(7, 2),
        "action": np.array([0, 1, 2, 0, 1, 1, 2]),
        "reward": np.array([0.0, 0.5, -15.0, 1.0, 0.0, 0.0, 2.0], np.float32),
        "done": np.array([0, 0, 1, 0, 0, 0, 0], bool),
        "timeout": np.array([0, 0, 0, 0, 0, 0, 1], bool),
        "patient": np.array([5, 5, 5, 8, 8, 8, 8]),
        "time": np.array([0.0, 4.0, 8.0, 0.0, 4.0, 8.0, 12.0]),
        "n_actions": 3,
        "mask": np.ones((7, 3), bool),
        "feature_names": ("hr", "sbp"),
    }
    for key, value in change.items():
        if callable(value):
            value(base[key])  # in-place edit of a copy
        else:
            base[key] = value
    return base


def setter(index: Any, value: Any):
    def edit(arr: np.ndarray) -> None:
        arr[index] = value

    return edit


@pytest.mark.parametrize(
    ("change", "message", "where"),
    [
        ({"time": setter(5, 3.0)}, "time does not increase", "patient 8 step 2"),
        ({"time": setter(1, 0.0)}, "time does not increase", "patient 5 step 1"),
        ({"done": setter(2, False)}, "episode without an end", "patient 5 step 2"),
        ({"timeout": setter(6, False)}, "episode without an end", "patient 8 step 3"),
        ({"done": setter(4, True)}, "episode ends before its last step", "patient 8 step 1"),
        ({"action": setter(4, 3)}, "action id outside the grid", "patient 8 step 1"),
        ({"action": setter(1, -1)}, "action id outside the grid", "patient 5 step 1"),
        ({"reward": setter(3, np.nan)}, "non-finite reward", "patient 8 step 0"),
        ({"obs": setter((6, 1), np.nan)}, "non-finite state", "patient 8 step 3"),
        ({"mask": setter(2, False)}, "forbids every action", "patient 5 step 2"),
        ({"mask": setter((5, 1), False)}, "logged action is forbidden", "patient 8 step 2"),
        ({"timeout": setter(2, True)}, "both done and timeout", "patient 5 step 2"),
    ],
)
def test_validation_names_patient_and_step(change, message, where) -> None:
    with pytest.raises(DataError) as err:
        Trajectories(**arrays(**change))
    assert message in str(err.value)
    assert where in str(err.value)


def test_nan_state_names_the_feature() -> None:
    with pytest.raises(DataError, match=r"features \['sbp'\]"):
        Trajectories(**arrays(obs=setter((6, 1), np.inf)))


def test_unsorted_rows_are_refused_but_from_unsorted_sorts() -> None:
    a = arrays()
    order = np.array([3, 0, 4, 1, 5, 2, 6])
    shuffled = {k: v[order] if isinstance(v, np.ndarray) else v for k, v in a.items()}
    with pytest.raises(DataError, match="not grouped by patient"):
        Trajectories(**shuffled)
    t = Trajectories.from_unsorted(**shuffled)
    np.testing.assert_array_equal(t.obs, a["obs"])
    np.testing.assert_array_equal(t.time, a["time"])


def test_structure_returns_and_transitions() -> None:
    t = Trajectories(**arrays())
    assert t.n_episodes == 2 and t.patients.tolist() == [5, 8]
    assert t.starts.tolist() == [0, 3] and t.ends.tolist() == [3, 7]
    assert t.step_index.tolist() == [0, 1, 2, 0, 1, 2, 3]
    # hand-computed: 0 + 0.9 * 0.5 + 0.81 * (-15), 1 + 0 + 0 + 0.729 * 2
    np.testing.assert_allclose(t.returns(0.9), [0.45 - 12.15, 1 + 1.458], rtol=1e-6)
    tr = t.transitions()
    assert tr["bootstrap"].tolist() == [1, 1, 0, 1, 1, 1, 0]
    np.testing.assert_array_equal(tr["next_obs"][[0, 1, 3]], t.obs[[1, 2, 4]])
    keep = t.select_patients([8])
    assert len(keep) == 4 and keep.patients.tolist() == [8]
