"""Reward terms against hand-computed numbers on a two-patient frame."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl import rewards
from clinfuse.rl.data import Trajectories
from clinfuse.rl.rewards import (
    BiomarkerInRange,
    CompositeReward,
    NutritionGoal,
    RewardSpec,
    RewardTerm,
    SofaLactate,
    TerminalSurvival,
    build_reward,
    last_steps,
)
from clinfuse.rl.splits import episode_died

NAN = float("nan")


def frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Patient 1 (3 steps, survives) and patient 2 (2 steps, dies)."""
    df = pd.DataFrame(
        {
            "patient": [1, 1, 1, 2, 2],
            "time": [0.0, 4.0, 8.0, 0.0, 4.0],
            "sofa": [4, 4, 6, 0, 0],
            "lactate": [2.0, 3.0, 1.0, 1.0, NAN],
            "glucose": [150.0, 200.0, NAN, 100.0, 160.0],
            "phosphate": [3.0, 2.0, 2.5, 1.0, 4.0],
            "sodium": [140.0, 134.0, 145.0, 150.0, 135.0],
            "cum_kcal_per_kg": [0.0, 10.0, 20.0, 5.0, 30.0],
            "day": [0, 0, 1, 2, 2],
        }
    )
    last = np.array([False, False, True, False, True])
    died = np.array([False, False, False, True, True])
    return df, last, died


# Hand-computed per step (rows 2 and 4 are last steps: no transition part).
TERMINAL = [0.0, 0.0, 15.0, 0.0, -15.0]
SOFA_LACTATE = [
    -0.025 + 0.0 - 2.0 * math.tanh(1.0),  # SOFA 4 -> 4 (> 0), lactate 2 -> 3
    0.0 - 0.125 * 2 - 2.0 * math.tanh(-2.0),  # SOFA 4 -> 6, lactate 3 -> 1
    0.0,
    0.0,  # SOFA 0 -> 0 is not penalised; lactate 1 -> NaN: missing part = 0
    0.0,
]
GLUCOSE = [-0.1, 0.0, 0.0, 0.1, 0.0]  # next 200 out; next NaN; last; next 160 in
PHOSPHATE = [-0.1, 0.1, 0.0, 0.1, 0.0]  # next 2.0 out; next 2.5 in (inclusive); next 4.0 in
SODIUM = [-0.1, 0.1, 0.0, 0.1, 0.0]  # next 134 out; 145 in (inclusive); 135 in


def test_terms_match_hand_computed_values() -> None:
    df, last, died = frame()
    np.testing.assert_allclose(TerminalSurvival()(df, last, died), TERMINAL)
    np.testing.assert_allclose(SofaLactate()(df, last, died), SOFA_LACTATE, rtol=1e-12)
    np.testing.assert_allclose(BiomarkerInRange("glucose", 140, 180)(df, last, died), GLUCOSE)
    phosphate = BiomarkerInRange("phosphate", low=2.5)
    np.testing.assert_allclose(phosphate(df, last, died), PHOSPHATE)
    np.testing.assert_allclose(BiomarkerInRange("sodium", 135, 145)(df, last, died), SODIUM)


def test_nutrition_goal_with_a_number_and_a_day_schedule() -> None:
    df, last, died = frame()
    flat = NutritionGoal(target=12.0, weight=0.5)(df, last, died)
    # next values 10, 20, -, 30, -: 0.5 * |10 - 12|, 0.5 * |20 - 12|, 0.5 * |30 - 12|
    np.testing.assert_allclose(flat, [-1.0, -4.0, 0.0, -9.0, 0.0])
    # a cumulative schedule of 8 kcal/kg per day, read at the day of step t + 1 (0, 1, -, 2, -)
    ramp = NutritionGoal(target=lambda d: 8.0 * (d + 1), weight=0.5)(df, last, died)
    np.testing.assert_allclose(ramp, [-0.5 * 2, -0.5 * 4, 0.0, -0.5 * 6, 0.0])


def test_composite_is_the_weighted_sum_of_its_parts() -> None:
    df, last, died = frame()
    reward = build_reward()
    assert [name for name, _, _ in reward.terms] == [
        "terminal",
        "sofa_lactate",
        "glucose",
        "phosphate",
        "sodium",
    ]  # nutrition has weight 0: left out, its columns are not required
    parts = reward.parts(df.drop(columns=["cum_kcal_per_kg", "day"]), last, died)
    expected = {
        "terminal": TERMINAL,
        "sofa_lactate": SOFA_LACTATE,
        "glucose": GLUCOSE,
        "phosphate": PHOSPHATE,
        "sodium": SODIUM,
    }
    for name, values in expected.items():
        np.testing.assert_allclose(parts[name], values, rtol=1e-12, atol=1e-15)
    total = np.sum([np.asarray(v) for v in expected.values()], axis=0)
    np.testing.assert_allclose(reward(df, last, died), total, rtol=1e-12)
    # weights scale parts linearly: doubling the glucose weight adds the glucose part once more
    heavier = build_reward(
        RewardSpec(glucose=0.2, terminal=1.0, nutrition=0.5, nutrition_target=12)
    )
    diff = heavier(df, last, died) - reward(df, last, died)
    np.testing.assert_allclose(
        diff, np.asarray(GLUCOSE) - 14 / 15 * np.asarray(TERMINAL) + [-1, -4, 0, -9, 0]
    )


def test_only_the_next_step_and_the_own_episode_matter() -> None:
    df, last, died = frame()
    reward = build_reward()
    before = reward(df, last, died)
    changed = df.copy()
    changed.loc[0, ["sofa", "lactate", "glucose", "phosphate", "sodium"]] = [NAN] * 5
    changed.loc[3, "glucose"] = 1000.0  # row 2 ends patient 1: row 3 is nobody's next state
    after = reward(changed, last, died)
    # row 0 features only enter step 0's own transition; row 3's glucose is never a "next" value
    np.testing.assert_allclose(after[1:], before[1:])
    np.testing.assert_allclose(after[0], 0.0 + 0.0 - 0.1 - 0.1 - 0.1 + 0.0)  # SOFA/lactate gone


def test_terminal_reward_marks_deaths_for_the_splits() -> None:
    df, last, died = frame()
    r = build_reward()(df, last, died)
    t = Trajectories(
        obs=df[["sofa", "sodium"]].to_numpy(),
        action=np.zeros(5, np.int64),
        reward=r,
        done=last,
        timeout=np.zeros(5, bool),
        patient=df["patient"].to_numpy(),
        time=df["time"].to_numpy(),
        n_actions=1,
    )
    assert episode_died(t).tolist() == [False, True]
    np.testing.assert_allclose(t.returns(), [sum(r[:3]), sum(r[3:])], rtol=1e-6)


def test_missing_columns_are_listed_with_the_available_ones() -> None:
    df, last, died = frame()
    with pytest.raises(DataError) as err:
        build_reward(RewardSpec(nutrition=1.0))(df.drop(columns=["day"]), last, died)
    msg = str(err.value)
    assert "['day']" in msg and "available columns" in msg and "'cum_kcal_per_kg'" in msg
    with pytest.raises(DataError, match=r"needs column\(s\) \['lac'\]"):
        SofaLactate(lactate="lac")(df, last, died)
    spec = RewardSpec(sodium_column="na")
    with pytest.raises(DataError, match=r"\['na'\]"):
        build_reward(spec)(df, last, died)
    text = df.astype({"glucose": object})
    text.loc[1, "glucose"] = "high"
    with pytest.raises(DataError, match="'glucose' is not numeric"):
        build_reward()(text, last, died)
    text.loc[1, "glucose"] = None  # None is a missing value: step 0 loses its -0.1 glucose part
    diff = build_reward()(text, last, died) - build_reward()(df, last, died)
    np.testing.assert_allclose(diff, [0.1, 0, 0, 0, 0], atol=1e-12)


def test_bad_flags_are_refused() -> None:
    df, last, died = frame()
    term = TerminalSurvival()
    with pytest.raises(DataError, match="'last' must be a bool array"):
        term(df, last.astype(int), died)
    with pytest.raises(DataError, match="'died' must be a bool array"):
        term(df, last, died[:3])
    with pytest.raises(DataError, match="final row must be the last step"):
        term(df, np.zeros(5, bool), died)
    with pytest.raises(DataError, match="disagrees with the patient column at row 1"):
        term(df, np.array([False, True, False, False, True]), died)
    assert last_steps(df["patient"]).tolist() == last.tolist()


def test_configs_are_validated_and_terms_fit_the_protocol() -> None:
    with pytest.raises(ConfigError, match="empty target range"):
        BiomarkerInRange("glucose", 180, 140)
    with pytest.raises(ConfigError, match="sodium_range is empty"):
        RewardSpec(sodium_range=(150.0, 140.0))
    with pytest.raises(ConfigError, match="finite"):
        RewardSpec(glucose=math.inf)
    with pytest.raises(ConfigError, match="unique"):
        CompositeReward((("a", TerminalSurvival(), 1.0), ("a", TerminalSurvival(), 2.0)))
    for term in (TerminalSurvival(), SofaLactate(), BiomarkerInRange("x"), NutritionGoal()):
        assert isinstance(term, RewardTerm)
    assert build_reward().columns == ("sofa", "lactate", "glucose", "phosphate", "sodium")


def test_empty_frame_gives_empty_rewards() -> None:
    df, _, _ = frame()
    empty = df.iloc[:0]
    out = build_reward(RewardSpec(nutrition=1.0))(empty, np.zeros(0, bool), np.zeros(0, bool))
    assert out.shape == (0,) and out.dtype == np.float64


def test_docstring_examples() -> None:
    result = doctest.testmod(rewards)
    assert result.attempted > 0 and result.failed == 0
