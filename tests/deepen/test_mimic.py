"""DeepEN MIMIC-IV builder on the synthetic mini database: planted truths and invariants."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("duckdb")

from clinfuse.core.errors import ConfigError, DataError  # noqa: E402
from clinfuse.methods.deepen.mimic import (  # noqa: E402
    REWARD_FEATURES,
    STATE_FEATURES,
    MimicConfig,
    build_mdp,
    load_products,
)
from clinfuse.methods.deepen.mimic_demo import (  # noqa: E402
    PLANTED_FED,
    PLANTED_STAYS,
    write_mimic_demo,
)

N_PATIENTS = 30
FED = PLANTED_STAYS["fed"]
W = PLANTED_FED["weight_kg"]


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mimic_demo(tmp_path_factory.mktemp("mimic_csv"), n_patients=N_PATIENTS, seed=0)


@pytest.fixture(scope="module")
def built(demo_csv: Path) -> tuple[pd.DataFrame, dict]:
    return build_mdp(demo_csv, MimicConfig())


@pytest.fixture(scope="module")
def built_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    root = write_mimic_demo(
        tmp_path_factory.mktemp("mimic_pq"), n_patients=N_PATIENTS, seed=0, fmt="parquet"
    )
    return build_mdp(root, MimicConfig(outcome="in_hospital"))


def _stay(steps: pd.DataFrame, role: str) -> pd.DataFrame:
    return steps[steps.stay_id == PLANTED_STAYS[role]].reset_index(drop=True)


# -- enteral feeds ---------------------------------------------------------------------------
def test_planted_infusions_are_prorated_exactly(built: tuple[pd.DataFrame, dict]) -> None:
    steps, info = built
    fed = _stay(steps, "fed")
    # Jevity 1.2 (Full): 1.2 kcal/mL, 55.5 g protein/L, 807 mL free water/L (Abbott label).
    # 300 mL over 3 h -> 6 h: bin 0 [0, 4) holds 1 h (100 mL), bin 1 [4, 8) holds 2 h (200 mL).
    for b, ml in ((0, 100.0), (1, 200.0)):
        row = fed.loc[b]
        assert row.en_ml == pytest.approx(ml)
        assert row.kcal_kg == pytest.approx(ml * 1.2 / W)
        assert row.protein_g_kg == pytest.approx(ml * 55.5 / 1000 / W)
        assert row.water_ml_kg == pytest.approx(ml * 807 / 1000 / W)
    # Replete (1/2), 200 mL in bin 2: half-strength formula plus half water.
    rep = load_products().set_index("itemid").loc[226047]
    assert rep.strength == 0.5
    row = fed.loc[2]
    assert row.kcal_kg == pytest.approx(200 * 0.5 * rep.kcal_per_ml / W)
    assert row.protein_g_kg == pytest.approx(200 * 0.5 * rep.protein_g_per_l / 1000 / W)
    assert row.water_ml_kg == pytest.approx(200 * (0.5 * rep.water_ml_per_l / 1000 + 0.5) / W)
    # bin 3: the 500 mL feed with endtime < starttime is skipped; only the 14 g Beneprotein
    # bolus counts (7 g = 25 kcal, 6 g protein), and a powder adds no volume.
    row = fed.loc[3]
    assert (row.en_ml, row.water_ml_kg) == (0.0, 0.0)
    assert row.kcal_kg == pytest.approx(14 * 25 / 7 / W)
    assert row.protein_g_kg == pytest.approx(14 * 6 / 7 / W)
    # bin 4: the 999 mL 'Rewritten' row is skipped
    assert fed.loc[4, ["en_ml", "kcal_kg", "protein_g_kg", "water_ml_kg"]].eq(0).all()
    assert info["feeds"]["skipped_end_before_start"] == 1
    assert info["feeds"]["skipped_rewritten"] == 1
    # feeding history: previous bin and cumulative sums of earlier bins
    assert fed.prev_kcal_kg.tolist()[:4] == pytest.approx([0, 1.5, 3.0, 1.25])
    assert fed.cum_kcal_kg.tolist()[:4] == pytest.approx([0, 1.5, 4.5, 5.75])
    assert fed.hours_since_en_start.tolist()[:3] == pytest.approx([0.0, 1.0, 5.0])


def test_skipped_feed_is_logged(demo_csv: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clinfuse.methods.deepen.mimic"):
        build_mdp(demo_csv, MimicConfig(max_hours=24.0))
    assert any(
        "1 enteral feed row(s) with endtime < starttime" in r.message for r in caplog.records
    )


def test_prorating_matches_a_python_oracle_on_every_stay(
    demo_csv: Path, built: tuple[pd.DataFrame, dict]
) -> None:
    """Per-row loop over inputevents vs the SQL: kcal, protein and water per (stay, bin)."""
    steps, _ = built
    inputs = pd.read_csv(
        demo_csv / "icu" / "inputevents.csv.gz", parse_dates=["starttime", "endtime"]
    )
    stays = pd.read_csv(demo_csv / "icu" / "icustays.csv.gz", parse_dates=["intime", "outtime"])
    products = load_products().set_index("itemid")
    n_bins = steps.groupby("stay_id").size()
    weight = steps.groupby("stay_id").weight_kg.first()
    intime = stays.set_index("stay_id").intime
    expected: dict[tuple[int, int], np.ndarray] = {}
    for r in inputs.itertuples():
        if r.stay_id not in n_bins.index or r.itemid not in products.index:
            continue
        if r.statusdescription == "Rewritten" or r.endtime < r.starttime or r.amount <= 0:
            continue
        p = products.loc[r.itemid]
        s = (r.starttime - intime[r.stay_id]).total_seconds() / 3600
        e = (r.endtime - intime[r.stay_id]).total_seconds() / 3600
        per_unit = np.array(
            [
                p.strength * p.kcal_per_ml,
                p.strength * p.protein_g_per_l / 1000,
                p.strength * p.water_ml_per_l / 1000 + 1 - p.strength,
            ]
        )
        for b in range(n_bins[r.stay_id]):
            lo, hi = 4.0 * b, 4.0 * (b + 1)
            if e > s:
                share = max(0.0, min(e, hi) - max(s, lo)) / (e - s)
            else:
                share = float(lo <= s < hi)
            if share > 0:
                key = (r.stay_id, b)
                expected[key] = expected.get(key, 0) + r.amount * share * per_unit
    got = steps.set_index(["stay_id", "bin"])[["kcal_kg", "protein_g_kg", "water_ml_kg"]]
    want = pd.DataFrame(0.0, index=got.index, columns=got.columns)
    for key, v in expected.items():
        want.loc[key] = v / weight[key[0]]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
    assert (got.kcal_kg > 0).sum() > 100  # the comparison is not vacuous


# -- cohort ----------------------------------------------------------------------------------
def test_cohort_excludes_planted_stays(built: tuple[pd.DataFrame, dict]) -> None:
    steps, info = built
    present = set(steps.stay_id)
    for role in ("fed", "first_of_two", "died_in_hospital", "died_after_discharge", "long"):
        assert PLANTED_STAYS[role] in present, role
    for role in ("child", "second_of_two", "never_fed", "short", "no_weight"):
        assert PLANTED_STAYS[role] not in present, role
    per_stay = steps.groupby("stay_id")
    assert (per_stay.age.first() >= 18).all()
    assert steps.groupby("subject_id").stay_id.nunique().max() == 1  # first stay only
    assert (per_stay.kcal_kg.sum() > 0).all()  # enteral-fed only
    flow = list(info["cohort"].values())
    assert flow == sorted(flow, reverse=True) and flow[-1] == steps.stay_id.nunique()
    # patientweight is missing for this stay: the charted admission weight (70 kg) is used
    assert _stay(steps, "died_in_hospital").weight_kg.unique().tolist() == [70.0]


def test_relaxed_cohort_keeps_second_stays(demo_csv: Path) -> None:
    steps, _ = build_mdp(demo_csv, MimicConfig(first_stay_only=False, max_hours=24.0))
    assert PLANTED_STAYS["second_of_two"] in set(steps.stay_id)
    assert PLANTED_STAYS["child"] not in set(steps.stay_id)


# -- bins, imputation, trends ----------------------------------------------------------------
def test_bins_are_aligned_to_intime(built: tuple[pd.DataFrame, dict]) -> None:
    steps, _ = built
    fed = _stay(steps, "fed")
    assert len(fed) == math.ceil(PLANTED_FED["los_hours"] / 4)  # 70.5 h -> 18 bins
    expected_start = PLANTED_FED["intime"] + pd.to_timedelta(4 * fed.bin, unit="h")
    assert (fed.bin_start == expected_start).all()
    assert fed.hours.tolist() == [4.0 * b for b in range(len(fed))]
    # HR at 0:30 (80) and 3:59 (90) fall in bin 0, the reading at exactly 4:00 (100) in bin 1
    assert fed.hr[0] == pytest.approx(85.0)
    assert fed.hr[1] == pytest.approx(100.0)
    long = _stay(steps, "long")
    assert len(long) == 7 * 24 // 4 and long.truncated.all()
    assert not fed.truncated.any()
    per_stay = steps.groupby("stay_id")
    assert (per_stay.last_bin.sum() == 1).all()
    assert (steps.loc[steps.last_bin, "bin"].to_numpy() == per_stay.bin.max().to_numpy()).all()
    assert (per_stay.bin.apply(lambda b: (b.to_numpy() == np.arange(len(b))).all())).all()


def test_sample_and_hold_then_median(built: tuple[pd.DataFrame, dict]) -> None:
    steps, info = built
    fed = _stay(steps, "fed")
    # no HR in bins 2 and 3: the last value (100, bin 1) is held until the 70 of bin 4
    assert fed.hr[:5].tolist() == pytest.approx([85.0, 100.0, 100.0, 100.0, 70.0])
    # labs: last value in the bin (150 then 130), then held until the next draw after 20 h
    assert fed.glucose[:5].tolist() == [130.0] * 5
    # the only temperature in bin 0 was 98.6 F
    assert fed.temp_c[0] == pytest.approx(37.0)
    # no lactate before 20 h: the cohort median fills bins 0-4
    assert fed.lactate[:5].tolist() == [info["feature_medians"]["lactate"]] * 5
    assert not steps[list(STATE_FEATURES)].isna().any().any()


def test_trend_is_difference_over_three_bins(built: tuple[pd.DataFrame, dict]) -> None:
    steps, _ = built
    fed = _stay(steps, "fed")
    assert fed.d_hr[4] == pytest.approx(70.0 - 100.0)  # hr_4 - hr_1
    assert fed.d_hr[3] == pytest.approx(100.0 - 85.0)  # hr_3 - hr_0
    g = steps.groupby("stay_id")
    for f in STATE_FEATURES:
        lagged = g[f].shift(3).fillna(g[f].transform("first"))  # t < 3: x_t - x_0
        np.testing.assert_allclose(steps[f"d_{f}"], steps[f] - lagged, atol=1e-9, err_msg=f)
    for f in REWARD_FEATURES:
        np.testing.assert_allclose(steps[f"next_{f}"], g[f].shift(-1), atol=1e-9, err_msg=f)
    assert steps.loc[steps.last_bin, [f"next_{f}" for f in REWARD_FEATURES]].isna().all().all()


def test_sofa_lite_matches_its_definition(built: tuple[pd.DataFrame, dict]) -> None:
    steps, _ = built

    def points(x: pd.Series, cuts: list[float], rising: bool) -> np.ndarray:
        return np.select([x >= c if rising else x < c for c in cuts], [4, 3, 2, 1], 0)

    want = (
        points(steps.platelets, [20, 50, 100, 150], rising=False)
        + points(steps.bilirubin, [12, 6, 2, 1.2], rising=True)
        + (steps.mbp < 70).astype(int)
        + points(steps.gcs, [6, 10, 13, 15], rising=False)
        + points(steps.creatinine, [5, 3.5, 2, 1.2], rising=True)
    )
    np.testing.assert_array_equal(steps.sofa_lite.to_numpy(), want.to_numpy())
    assert steps.sofa_lite.nunique() > 2


# -- outcome, formats, errors ----------------------------------------------------------------
def test_death_flags(built, built_parquet) -> None:  # type: ignore[no-untyped-def]
    steps, _ = built
    died = _stay(steps, "died_in_hospital")
    later = _stay(steps, "died_after_discharge")
    alive = _stay(steps, "fed")
    assert died.death.all() and died.death_in_hospital.all() and died.death_90d.all()
    assert died.death_hours[0] == pytest.approx(47.0)  # died at ICU discharge
    assert later.death_90d.all() and not later.death_in_hospital.any() and later.death.all()
    assert not alive.death.any() and alive.death_hours.isna().all()
    steps_ih, _ = built_parquet  # outcome="in_hospital"
    assert not _stay(steps_ih, "died_after_discharge").death.any()
    assert _stay(steps_ih, "died_in_hospital").death.all()


def test_csv_and_parquet_give_the_same_steps(built, built_parquet) -> None:  # type: ignore[no-untyped-def]
    a, info_a = built
    b, info_b = built_parquet
    cols = [c for c in a.columns if c != "death"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_dtype=False)
    assert info_a["cohort"] == info_b["cohort"]


def test_missing_table_is_named(demo_csv: Path, tmp_path: Path) -> None:
    root = shutil.copytree(demo_csv, tmp_path / "m")
    (root / "icu" / "inputevents.csv.gz").unlink()
    with pytest.raises(DataError, match="icu/inputevents"):
        build_mdp(root)


def test_missing_column_is_named(demo_csv: Path, tmp_path: Path) -> None:
    root = shutil.copytree(demo_csv, tmp_path / "m")
    path = root / "icu" / "icustays.csv.gz"
    pd.read_csv(path).drop(columns=["intime"]).to_csv(path, index=False, compression="gzip")
    with pytest.raises(DataError, match=r"icustays\.csv\.gz lacks column\(s\) intime"):
        build_mdp(root)


def test_bad_config_and_demo_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bin_hours"):
        MimicConfig(bin_hours=0)
    with pytest.raises(ConfigError, match="outcome"):
        MimicConfig(outcome="30_day")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        write_mimic_demo(tmp_path, n_patients=3)


def test_product_table() -> None:
    products = load_products()
    assert products.itemid.is_unique
    assert products.strength.between(0.25, 1.0).all()
    fluids = products[products.unit == "mL"]
    assert fluids.kcal_per_ml.between(0.8, 2.0).all()
    assert fluids.water_ml_per_l.between(650, 900).all()
    assert set(products.certainty) == {"known", "uncertain"}
    wanted = {221036, 221207, 225970, 229295, 229296, 229297}
    wanted |= set(range(225928, 225932)) | set(range(225934, 225938))
    wanted |= set(range(226016, 226032)) | set(range(229009, 229015))
    assert wanted <= set(products.itemid)
    quarter = products[products.label.str.endswith("(1/4)")]
    assert (quarter.strength == 0.25).all() and len(quarter) > 10
