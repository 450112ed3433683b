"""Trajectory files (exact round trips, atomic writes, schema errors) and patient-level splits."""

from __future__ import annotations

import doctest
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.rl import io as rl_io
from clinfuse.rl import splits
from clinfuse.rl.data import Trajectories
from clinfuse.rl.io import load_trajectories, save_trajectories
from clinfuse.rl.splits import episode_died, split_counts, split_patients


def make_traj(
    n_patients: int = 12,
    *,
    died_every: int = 4,
    mask: bool = False,
    names: tuple[str, ...] | None = ("hr", "sbp", "glucose"),
    seed: int = 0,
) -> Trajectories:
    """Random episodes of 1-6 steps; patient ``k * died_every`` dies (done, reward -15), the
    others survive (done, +15) or are truncated (timeout)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 7, n_patients)
    n = int(lengths.sum())
    patient = np.repeat(np.arange(100, 100 + n_patients), lengths)
    last = np.cumsum(lengths) - 1
    reward = rng.normal(size=n).astype(np.float32)
    done = np.zeros(n, bool)
    timeout = np.zeros(n, bool)
    for k, i in enumerate(last):
        if k % died_every == 0:
            done[i], reward[i] = True, -15.0
        elif k % 3 == 0:
            timeout[i] = True
        else:
            done[i], reward[i] = True, 15.0
    n_actions = 5
    action = rng.integers(0, n_actions, n)
    m = None
    if mask:
        m = rng.random((n, n_actions)) < 0.5
        m[np.arange(n), action] = True
    d = 3 if names is None else len(names)
    return Trajectories(
        obs=rng.normal(size=(n, d)).astype(np.float32) * 1e3,
        action=action,
        reward=reward,
        done=done,
        timeout=timeout,
        patient=patient,
        time=np.concatenate([np.cumsum(rng.uniform(0.5, 4.0, k)) for k in lengths]),
        n_actions=n_actions,
        mask=m,
        feature_names=names,
        meta={"source": "synthetic", "grid": {"names": ["kcal"], "edges": [[1e-300, 2.5]]}},
    )


def assert_same(a: Trajectories, b: Trajectories) -> None:
    for name in ("obs", "action", "reward", "done", "timeout", "patient", "time"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        np.testing.assert_array_equal(a.mask, b.mask)
    assert a.n_actions == b.n_actions
    assert a.feature_names == b.feature_names
    assert a.meta == b.meta


# -- io --------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("mask", [False, True])
def test_round_trip_is_exact(tmp_path, suffix, mask) -> None:
    t = make_traj(mask=mask)
    path = t.save(tmp_path / f"t{suffix}")
    assert path == tmp_path / f"t{suffix}"
    assert_same(t, Trajectories.load(path))
    assert [p.name for p in tmp_path.iterdir()] == [f"t{suffix}"]  # no temp file left


def test_parquet_layout_and_metadata(tmp_path) -> None:
    t = make_traj(mask=True)
    table = pq.read_table(save_trajectories(t, tmp_path / "t.parquet"))
    assert table.column_names == [
        *rl_io.STEP_COLUMNS,
        "hr",
        "sbp",
        "glucose",
        *(f"mask_{a}" for a in range(5)),
    ]
    head = json.loads(table.schema.metadata[b"clinfuse.rl"])
    assert head["n_actions"] == 5 and head["feature_names"] == ["hr", "sbp", "glucose"]
    assert head["meta"]["source"] == "synthetic"


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_names_that_clash_or_are_absent_still_round_trip(tmp_path, suffix) -> None:
    for names in [("time", "mask_0", "x"), None, ("a", "a", "b")]:
        t = make_traj(names=names, mask=True)
        assert_same(t, load_trajectories(save_trajectories(t, tmp_path / f"t{suffix}")))
    cols = pq.read_table(save_trajectories(t, tmp_path / "t.parquet")).column_names
    assert {"obs_0", "obs_1", "obs_2"} <= set(cols)


def test_meta_keeps_only_the_json_part(tmp_path) -> None:
    t = make_traj()
    t.meta.update({"obj": object(), "n": np.int64(3), "arr": np.array([1.5, 2.0]), "tup": (1, "a")})
    for suffix in (".parquet", ".npz"):
        meta = load_trajectories(save_trajectories(t, tmp_path / f"m{suffix}")).meta
        assert "obj" not in meta
        assert meta["n"] == 3 and meta["arr"] == [1.5, 2.0] and meta["tup"] == [1, "a"]


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch, suffix) -> None:
    old, new = make_traj(seed=1), make_traj(seed=2)
    path = save_trajectories(old, tmp_path / f"t{suffix}")
    before = path.read_bytes()

    def crash_parquet(table, where, **kw) -> None:  # half a file, then the disk fills up
        Path(where).write_bytes(b"PAR1 partial")
        raise OSError("disk full")

    def crash_npz(fh, **arrays) -> None:
        fh.write(b"PK partial")
        raise OSError("disk full")

    if suffix == ".parquet":
        monkeypatch.setattr(pq, "write_table", crash_parquet)
    else:
        monkeypatch.setattr(np, "savez_compressed", crash_npz)
    with pytest.raises(OSError, match="disk full"):
        save_trajectories(new, path)
    assert path.read_bytes() == before
    assert_same(old, load_trajectories(path))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_unknown_suffix_and_missing_file(tmp_path) -> None:
    with pytest.raises(DataError, match=r"unknown trajectory file format '\.csv'") as err:
        save_trajectories(make_traj(), tmp_path / "t.csv")
    assert "t.csv" in str(err.value) and ".npz" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        load_trajectories(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match="unknown trajectory file format"):
        load_trajectories(tmp_path / "t")


@pytest.mark.parametrize("column", ["reward", "patient", "sbp", "mask_3"])
def test_parquet_missing_column_is_named(tmp_path, column) -> None:
    path = save_trajectories(make_traj(mask=True), tmp_path / "t.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)
    with pytest.raises(DataError) as err:
        load_trajectories(path)
    assert str(path) in str(err.value) and f"column {column!r}" in str(err.value)


@pytest.mark.parametrize("array", ["done", "obs", "header", "mask"])
def test_npz_missing_array_is_named(tmp_path, array) -> None:
    path = save_trajectories(make_traj(mask=True), tmp_path / "t.npz")
    with np.load(path) as z:
        kept = {k: z[k] for k in z.files if k != array}
    with open(path, "wb") as fh:
        np.savez(fh, **kept)
    with pytest.raises(DataError) as err:
        load_trajectories(path)
    assert str(path) in str(err.value) and f"array {array!r}" in str(err.value)


def test_npz_with_pickled_objects_is_refused(tmp_path) -> None:
    t = make_traj()
    path = tmp_path / "evil.npz"
    arrays = {k: getattr(t, k) for k in rl_io.NPZ_ARRAYS}
    arrays["header"] = np.array([{"n_actions": 5}], dtype=object)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_trajectories(path)


def test_corrupt_files_raise_data_error(tmp_path) -> None:
    for name in ("t.parquet", "t.npz"):
        (tmp_path / name).write_bytes(b"not a data file")
        with pytest.raises(DataError, match="not a readable"):
            load_trajectories(tmp_path / name)


def test_foreign_parquet_is_inferred_and_sorted(tmp_path) -> None:
    df = pd.DataFrame(
        {
            "patient": [2, 1, 2, 1],
            "time": [4.0, 0.0, 0.0, 4.0],
            "action": [1, 0, 3, 2],
            "reward": [1.0, 0.0, 0.0, -15.0],
            "done": [False, False, False, True],
            "timeout": [True, False, False, False],
            "hr": [80.0, 90.0, 85.0, 120.0],
        }
    )
    df.to_parquet(tmp_path / "f.parquet", index=False)
    t = load_trajectories(tmp_path / "f.parquet")
    assert t.n_actions == 4 and t.feature_names == ("hr",) and t.mask is None
    assert t.patient.tolist() == [1, 1, 2, 2] and t.obs[:, 0].tolist() == [90, 120, 85, 80]
    df["ward"] = ["a", "b", "a", "b"]
    df.to_parquet(tmp_path / "f.parquet", index=False)
    with pytest.raises(DataError, match="feature column 'ward' is not numeric"):
        load_trajectories(tmp_path / "f.parquet")
    df.loc[0, "action"] = None
    df.to_parquet(tmp_path / "g.parquet", index=False)
    with pytest.raises(DataError, match="'action' has 1 missing values"):
        load_trajectories(tmp_path / "g.parquet")


def test_loaded_file_is_validated(tmp_path) -> None:
    path = save_trajectories(make_traj(), tmp_path / "t.parquet")
    table = pq.read_table(path)
    i = table.column_names.index("reward")
    reward = table.column("reward").to_numpy().copy()
    reward[4] = np.nan
    pq.write_table(table.set_column(i, "reward", [reward]), path)
    with pytest.raises(DataError, match="non-finite reward at patient"):
        load_trajectories(path)


# -- splits ----------------------------------------------------------------------------------
def test_episode_died_uses_done_and_a_negative_last_reward() -> None:
    t = make_traj(n_patients=12, died_every=4)
    died = episode_died(t)
    assert died.tolist() == [k % 4 == 0 for k in range(12)]
    # a truncated episode with a negative last reward is not a death
    assert not np.any(died[t.timeout[t.ends - 1]])


def test_split_is_patient_level_exhaustive_and_stratified() -> None:
    t = make_traj(n_patients=200, died_every=4)  # 50 deaths, 150 survivors
    parts = split_patients(t, (0.7, 0.1, 0.2), seed=3)
    ids = {k: set(v.patients.tolist()) for k, v in parts.items()}
    assert not (
        ids["train"] & ids["valid"] or ids["train"] & ids["test"] or ids["valid"] & ids["test"]
    )
    assert ids["train"] | ids["valid"] | ids["test"] == set(t.patients.tolist())
    assert sum(len(v) for v in parts.values()) == len(t)
    # per stratum 50 -> 35/5/10 and 150 -> 105/15/30: sizes and death rates are exact
    assert [v.n_episodes for v in parts.values()] == [140, 20, 40]
    assert [episode_died(v).mean() for v in parts.values()] == [0.25, 0.25, 0.25]
    for v in parts.values():  # each split keeps whole episodes in the original row order
        whole = t.select_patients(v.patients)
        np.testing.assert_array_equal(v.obs, whole.obs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outcome_rate_within_tolerance_on_uneven_strata(seed) -> None:
    t = make_traj(n_patients=301, died_every=7, seed=seed)
    rate = episode_died(t).mean()
    parts = split_patients(t, seed=seed)
    for v in parts.values():
        # largest-remainder rounding: each stratum is off by < 1 patient per split
        assert abs(episode_died(v).mean() - rate) <= 2 / v.n_episodes
    plain = [split_patients(t, seed=s, stratify=None)["valid"] for s in range(20)]
    spread = max(abs(episode_died(v).mean() - rate) for v in plain)
    assert spread > 2 / plain[0].n_episodes  # without strata the rate does drift


def test_split_is_deterministic_for_a_seed() -> None:
    t = make_traj(n_patients=60)
    a, b, c = (split_patients(t, seed=s) for s in (7, 7, 8))
    for k in splits.SPLITS:
        assert a[k].patients.tolist() == b[k].patients.tolist()
    assert a["train"].patients.tolist() != c["train"].patients.tolist()


def test_custom_stratifier_and_no_stratification() -> None:
    t = make_traj(n_patients=100)
    long = (t.ends - t.starts) >= 4
    parts = split_patients(
        t, (0.5, 0.0, 0.5), seed=0, stratify=lambda tr: (tr.ends - tr.starts) >= 4
    )
    assert parts["valid"].n_episodes == 0 and len(parts["valid"]) == 0
    for v in (parts["train"], parts["test"]):
        n_long = int(((v.ends - v.starts) >= 4).sum())
        assert abs(n_long - long.sum() / 2) <= 1
    plain = split_patients(t, (0.6, 0.2, 0.2), seed=0, stratify=None)
    assert [v.n_episodes for v in plain.values()] == [60, 20, 20]


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.3), (0.8, 0.3, -0.1), (0.5, 0.2, 0.2), (0.7, 0.1, float("nan"))]
)
def test_fractions_are_validated(fractions) -> None:
    with pytest.raises(ConfigError, match="three non-negative numbers summing to 1"):
        split_patients(make_traj(), fractions)


def test_bad_stratifier() -> None:
    t = make_traj()
    with pytest.raises(DataError, match="one label per episode"):
        split_patients(t, stratify=lambda tr: np.zeros(len(tr)))
    with pytest.raises(ConfigError, match="unknown stratification"):
        split_patients(t, stratify="mortality")  # type: ignore[arg-type]


def test_split_counts_sum_and_rounding() -> None:
    for n in range(0, 40):
        c = split_counts(n, (0.7, 0.1, 0.2))
        assert c.sum() == n and np.all(np.abs(c - np.array([0.7, 0.1, 0.2]) * n) < 1)


def test_docstring_examples() -> None:
    for module in (rl_io, splits):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
