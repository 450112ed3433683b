"""DPsurv data layer: bag readers (h5/pt/TRIDENT), label styles, folds, every bad-input error."""

from __future__ import annotations

import doctest
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from clinfuse.core.errors import DataError
from clinfuse.methods.dpsurv import data as data_module
from clinfuse.methods.dpsurv.data import (
    DAYS_PER_UNIT,
    Bag,
    find_bags,
    load_cohort,
    read_bag,
    read_folds,
    stratified_folds,
    write_h5_bag,
)
from clinfuse.methods.dpsurv.synthetic import export, make_synthetic_cohort

SMALL = {
    "n_cases": 30,
    "min_patches": 8,
    "max_patches": 15,
    "two_slide_fraction": 0.3,
    "seed": 7,
}


@pytest.fixture(scope="module")
def cohort():
    return make_synthetic_cohort(**SMALL)


@pytest.fixture(scope="module")
def exported(cohort, tmp_path_factory):
    return export(cohort, tmp_path_factory.mktemp("syn"), bag_format="both")


@pytest.fixture
def work(exported, tmp_path) -> Path:
    """A private, editable copy of the exported cohort."""
    dst = tmp_path / "cohort"
    shutil.copytree(exported.root, dst)
    return dst


def _same_folds(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
        for (tr1, te1), (tr2, te2) in zip(a, b, strict=True)
    )


def _assert_same_bags(loaded, original, coords: bool = True) -> None:
    for case in original.case_ids:
        got, want = loaded.bag(case), original.bag(case)
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.slide_index, want.slide_index)
        assert got.slides == want.slides and got.case_id == case
        if coords:
            np.testing.assert_array_equal(got.coords, want.coords)
        else:
            assert got.coords is None


# -- round trips -----------------------------------------------------------------------------
def test_round_trip_tcga_cdr_h5_folders(cohort, exported):
    loaded = load_cohort(exported.feats_h5, exported.labels_cdr, exported.splits)
    np.testing.assert_array_equal(loaded.case_ids, cohort.case_ids)
    np.testing.assert_array_equal(loaded.time, cohort.time)  # days written with full precision
    np.testing.assert_array_equal(loaded.event, cohort.event)
    assert loaded.slides == cohort.slides and loaded.feature_dim == 32
    assert loaded.time_unit == "days" and loaded.truth is None
    assert _same_folds(loaded.folds, cohort.folds)
    _assert_same_bags(loaded, cohort)


def test_round_trip_mcat_pt_splits_files(cohort, exported):
    loaded = load_cohort(exported.feats_pt, exported.labels_mcat, exported.splits_mcat)
    np.testing.assert_array_equal(loaded.case_ids, cohort.case_ids)
    np.testing.assert_allclose(loaded.time, cohort.time, rtol=1e-12)  # months -> days
    np.testing.assert_array_equal(loaded.event, cohort.event)
    assert _same_folds(loaded.folds, cohort.folds)
    _assert_same_bags(loaded, cohort, coords=False)
    months = load_cohort(exported.feats_pt, exported.labels_mcat, time_unit="months")
    np.testing.assert_allclose(months.time, cohort.time / DAYS_PER_UNIT["months"], rtol=1e-12)
    assert months.time_unit == "months" and months.folds is None


def test_parent_folder_with_both_formats_needs_fmt(cohort, exported):
    with pytest.raises(DataError, match="fmt") as err:
        find_bags(exported.root)
    assert "h5" in str(err.value) and "pt" in str(err.value)
    assert set(find_bags(exported.root, fmt="pt")) == {s for v in cohort.slides.values() for s in v}
    loaded = load_cohort(exported.root, exported.labels_cdr, fmt="h5")
    _assert_same_bags(loaded, cohort)


def test_endpoint_selects_cdr_columns(work, cohort):
    labels = pd.read_csv(work / "labels_tcga_cdr.csv", float_precision="round_trip")
    labels["os_survival_days"] *= 2.0
    labels["os_censorship"] = 0
    labels.to_csv(work / "labels_tcga_cdr.csv", index=False)
    dss = load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv")
    os_ = load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv", endpoint="os")
    np.testing.assert_array_equal(dss.time, cohort.time)
    np.testing.assert_allclose(os_.time, 2.0 * cohort.time)
    assert os_.event.all() and not dss.event.all()


def _trident(root: Path, cohort, cases) -> Path:
    """A TRIDENT job: two encoders, coordinates only in patches/<slide>_patches.h5."""
    job = root / "job"
    patching = job / "20x_256px_0px_overlap"
    for case in cases:
        for slide in cohort.slides[case]:
            bag = cohort.slide_bag(slide)
            write_h5_bag(patching / "features_uni_v1" / f"{slide}.h5", bag.features)
            write_h5_bag(patching / "features_conch_v15" / f"{slide}.h5", bag.features[:, :8])
            (patching / "patches").mkdir(exist_ok=True)
            with h5py.File(patching / "patches" / f"{slide}_patches.h5", "w") as fh:
                fh.create_dataset("coords", data=bag.coords)
    (job / "10x_256px_0px_overlap" / "features_uni_v1").mkdir(parents=True)
    return job


def test_trident_layout(tmp_path, cohort, exported):
    cases = cohort.case_ids[:6].tolist()
    job = _trident(tmp_path, cohort, cases)
    with pytest.raises(DataError, match="patching") as err:
        find_bags(job)
    assert "10x_256px_0px_overlap" in str(err.value) and "20x_256px_0px_overlap" in str(err.value)
    with pytest.raises(DataError, match="encoder") as err:
        find_bags(job, patching="20x_256px_0px_overlap")
    assert "uni_v1" in str(err.value) and "conch_v15" in str(err.value)
    with pytest.raises(DataError, match="'gigapath' not found"):
        find_bags(job / "20x_256px_0px_overlap", encoder="gigapath")
    paths = find_bags(job, patching="20x_256px_0px_overlap", encoder="uni_v1")
    assert set(paths) == {s for c in cases for s in cohort.slides[c]}
    assert all(p.parent.name == "features_uni_v1" for p in paths.values())
    labels = pd.read_csv(exported.labels_cdr)
    labels[labels["case_id"].isin(cases)].to_csv(tmp_path / "labels.csv", index=False)
    loaded = load_cohort(job / "20x_256px_0px_overlap", tmp_path / "labels.csv", encoder="uni_v1")
    _assert_same_bags(loaded, cohort.subset(np.arange(6)))  # coords come from patches/
    conch = load_cohort(job / "20x_256px_0px_overlap", tmp_path / "labels.csv", encoder="conch_v15")
    assert conch.feature_dim == 8


def test_multi_slide_aggregation(cohort, exported):
    multi = [c for c in cohort.case_ids if len(cohort.slides[c]) == 2]
    assert multi, "the fixture should have two-slide cases"
    concat = load_cohort(exported.feats_h5, exported.labels_cdr)
    first = load_cohort(exported.feats_h5, exported.labels_cdr, aggregate="first")
    for case in multi:
        s0, s1 = cohort.slides[case]
        a, b = read_bag(exported.feats_h5 / f"{s0}.h5"), read_bag(exported.feats_h5 / f"{s1}.h5")
        bag = concat.bag(case)
        np.testing.assert_array_equal(bag.features, np.vstack([a.features, b.features]))
        np.testing.assert_array_equal(bag.coords, np.vstack([a.coords, b.coords]))
        assert bag.slide_index.tolist() == [0] * a.n_patches + [1] * b.n_patches
        assert bag.slide_id == f"{s0}+{s1}" and bag.slides == (s0, s1)
        assert len(cohort.truth["patch_labels"][case]) == bag.n_patches
        one = first.bag(case)
        np.testing.assert_array_equal(one.features, a.features)
        assert first.slides[case] == [s0] and one.slides == (s0,)
    np.testing.assert_array_equal(first.time, concat.time)


# -- bad input -------------------------------------------------------------------------------
def test_missing_bags_listed_all(work, cohort):
    slides = [s for c in cohort.case_ids for s in cohort.slides[c]]
    gone = slides[:25]
    for s in gone:
        (work / "feats_h5" / f"{s}.h5").unlink()
    with pytest.raises(DataError, match="25 labelled slides have no bag") as err:
        load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv")
    msg = str(err.value)
    assert all(s in msg for s in gone[:20]) and "and 5 more" in msg
    assert gone[20] not in msg and "missing_bags='drop'" in msg
    kept = load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv", missing_bags="drop")
    assert not set(gone) & {s for v in kept.slides.values() for s in v}
    assert all(kept.slides[c] for c in kept.case_ids)


def _case_of(cohort, slide: str) -> str:
    return next(c for c in cohort.case_ids if slide in cohort.slides[c])


def test_wrong_feature_dim_named(work, cohort):
    slide = cohort.slides[cohort.case_ids[4]][0]
    write_h5_bag(work / "feats_h5" / f"{slide}.h5", np.ones((5, 31), np.float32))
    with pytest.raises(DataError, match="feature dimension differs") as err:
        load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv")
    assert f"{slide} (case {cohort.case_ids[4]}): D = 31" in str(err.value)
    with pytest.raises(DataError, match="D = 64") as err:
        load_cohort(work / "feats_pt", work / "labels_tcga_cdr.csv", feature_dim=64)
    assert cohort.slides[cohort.case_ids[0]][0] in str(err.value)


def test_empty_bag_named(work, cohort):
    slide = cohort.slides[cohort.case_ids[2]][0]
    torch.save(torch.zeros(0, 32), work / "feats_pt" / f"{slide}.pt")
    with pytest.raises(DataError, match="empty bags") as err:
        load_cohort(work / "feats_pt", work / "labels_tcga_cdr.csv")
    assert f"{slide} (case {cohort.case_ids[2]})" in str(err.value)


def test_nan_features_named(work, cohort):
    case = cohort.case_ids[3]
    slide = cohort.slides[case][0]
    feats = cohort.slide_bag(slide).features.copy()
    feats[2, 5] = np.nan
    feats[4, 0] = np.inf
    write_h5_bag(work / "feats_h5" / f"{slide}.h5", feats, cohort.slide_bag(slide).coords)
    lazy = load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv")  # headers are fine
    with pytest.raises(DataError, match="2 patch") as err:
        lazy.bag(case)
    assert f"slide {slide} (case {case})" in str(err.value) and "2, 4" in str(err.value)
    with pytest.raises(DataError, match=f"slide {slide}"):
        load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv", validate="full")


def _edit_labels(work: Path, case: str, column: str, value) -> Path:
    path = work / "labels_tcga_cdr.csv"
    df = pd.read_csv(path, float_precision="round_trip")
    df[column] = df[column].astype(object)
    df.loc[df["case_id"] == case, column] = value
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("column", "value", "pattern"),
    [
        ("dss_survival_days", -3.0, "dss_survival_days must be >= 0"),
        ("dss_censorship", 2, r"dss_censorship must be 0 \(event\) or 1 \(censored\)"),
        ("dss_survival_days", "soon", "dss_survival_days is not a number"),
        ("dss_survival_days", np.nan, "missing dss_survival_days or dss_censorship"),
    ],
)
def test_bad_labels_name_the_case(work, cohort, column, value, pattern):
    case = cohort.case_ids[5]
    path = _edit_labels(work, case, column, value)
    with pytest.raises(DataError, match=pattern) as err:
        load_cohort(work / "feats_h5", path)
    assert f"case {case}" in str(err.value) and "line " in str(err.value)


def test_missing_labels_can_be_dropped(work, cohort):
    case = cohort.case_ids[5]
    path = _edit_labels(work, case, "dss_censorship", np.nan)
    loaded = load_cohort(work / "feats_h5", path, drop_missing_labels=True)
    assert case not in loaded.case_ids and len(loaded) == len(cohort) - 1


def test_conflicting_case_labels_named(work, cohort):
    case = next(c for c in cohort.case_ids if len(cohort.slides[c]) == 2)
    path = work / "labels_tcga_cdr.csv"
    df = pd.read_csv(path)
    row = df.index[df["slide_id"] == cohort.slides[case][1]][0]
    df.loc[row, "dss_survival_days"] += 1.0
    df.to_csv(path, index=False)
    with pytest.raises(DataError, match="conflicting labels") as err:
        load_cohort(work / "feats_h5", path)
    assert f"case {case}" in str(err.value) and cohort.slides[case][1] in str(err.value)


def test_unknown_label_columns(work):
    path = work / "labels.csv"
    pd.DataFrame({"case_id": ["a"], "slide_id": ["s"], "time": [1.0], "status": [1]}).to_csv(
        path, index=False
    )
    with pytest.raises(DataError, match="not a survival label csv") as err:
        load_cohort(work / "feats_h5", path)
    assert "dss_survival_days" in str(err.value) and "survival_months" in str(err.value)
    assert "'status'" in str(err.value)


def test_leaking_fold_named(work, cohort):
    fold = work / "splits" / "k=2"
    test = pd.read_csv(fold / "test.csv")
    train = pd.read_csv(fold / "train.csv")
    leaked = test["case_id"].iloc[0]
    pd.concat([train, test.iloc[:1]]).to_csv(fold / "train.csv", index=False)
    with pytest.raises(DataError, match="fold k=2 .*leak") as err:
        load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv", work / "splits")
    assert leaked in str(err.value)
    mcat = work / "splits_mcat" / "splits_1.csv"
    df = pd.read_csv(mcat, index_col=0)
    df.loc[0, "train"] = df["val"].dropna().iloc[-1]
    df.to_csv(mcat)
    with pytest.raises(DataError, match="splits_1.csv .*leak") as err:
        load_cohort(work / "feats_h5", work / "labels_tcga_cdr.csv", work / "splits_mcat")
    assert df["val"].dropna().iloc[-1] in str(err.value)


def test_folds_by_slide_id_and_unknown_ids(work, cohort, exported):
    fold = work / "splits" / "k=0"
    for part in ("train", "test"):
        df = pd.read_csv(fold / f"{part}.csv")
        extra = pd.DataFrame({"case_id": ["GHOST"], "slide_id": [f"GHOST-{part}-DX1"]})
        pd.concat([df, extra])[["slide_id"]].assign(slide_id=lambda d: d.slide_id + ".svs").to_csv(
            fold / f"{part}.csv", index=False
        )
    slide_to_case = {s: c for c in cohort.case_ids for s in cohort.slides[c]}
    folds = read_folds(work / "splits", cohort.case_ids.tolist(), slide_to_case)
    assert _same_folds(folds, cohort.folds)
    with pytest.raises(DataError, match="no folds"):
        read_folds(work / "feats_h5", cohort.case_ids.tolist())


def test_stratified_folds_partition_and_balance():
    event = np.r_[np.ones(23, int), np.zeros(40, int)]
    folds = stratified_folds(event, n_folds=5, seed=3)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(63))
    for tr, te in folds:
        assert not np.intersect1d(tr, te).size and len(tr) + len(te) == 63
    per_fold = [int(event[te].sum()) for _, te in folds]
    assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == 23
    again = stratified_folds(event, n_folds=5, seed=3)
    assert _same_folds(folds, again)
    with pytest.raises(DataError, match="n_folds"):
        stratified_folds(event[:3], n_folds=5)


def test_subset_and_fold(cohort):
    train, test = cohort.fold(1)
    assert len(train) + len(test) == len(cohort)
    assert not set(train.case_ids) & set(test.case_ids)
    i = cohort.folds[1][1]
    np.testing.assert_array_equal(test.truth["proportions"], cohort.truth["proportions"][i])
    assert list(test.truth["patch_labels"]) == test.case_ids.tolist()
    assert test.truth["means"] is cohort.truth["means"] and test.folds is None
    np.testing.assert_array_equal(test.bag(0).features, cohort.bag(int(i[0])).features)
    scratch = cohort.bag(0)
    scratch.features[:] = 0.0  # callers get copies of in-memory bags
    assert cohort.bag(0).features.any()


def test_bag_files_and_atomic_write(tmp_path):
    path = tmp_path / "a" / "s1.h5"
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_h5_bag(path, feats, np.arange(8).reshape(4, 2))
    bag = read_bag(path)
    assert bag.slide_id == "s1" and bag.coords.dtype == np.int64
    np.testing.assert_array_equal(bag.features, feats)
    with pytest.raises(ValueError):
        write_h5_bag(tmp_path / "a" / "s2.h5", feats, np.array([["x", "y"]] * 4))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["s1.h5"]  # no temp, no s2
    torch.save({"features": torch.ones(2, 3)}, tmp_path / "d.pt")
    with pytest.raises(DataError, match="bare tensor"):
        read_bag(tmp_path / "d.pt")
    with pytest.raises(DataError, match="coords do not match"):
        write_h5_bag(tmp_path / "c.h5", np.zeros((1, 3)), np.ones((2, 2)))
    with h5py.File(tmp_path / "c.h5", "w") as fh:
        fh.create_dataset("features", data=np.zeros((1, 3)))
        fh.create_dataset("coords", data=np.ones((2, 2)))
    with pytest.raises(DataError, match="2 coordinates for 1 patches"):
        read_bag(tmp_path / "c.h5")
    with h5py.File(tmp_path / "e.h5", "w") as fh:
        fh.create_dataset("coords", data=np.ones((2, 2)))
    with pytest.raises(DataError, match="no 'features' dataset"):
        read_bag(tmp_path / "e.h5")
    (tmp_path / "x.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot open"):
        read_bag(tmp_path / "x.h5")
    with pytest.raises(DataError, match="coords do not match"):
        Bag("s", np.ones((3, 2)), np.ones((2, 2)))


def test_bags_root_errors(tmp_path):
    with pytest.raises(DataError, match="bags folder not found"):
        find_bags(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no feature bags") as err:
        find_bags(tmp_path)
    assert "readme.txt" in str(err.value)


def test_doctests():
    result = doctest.testmod(data_module)
    assert result.failed == 0 and result.attempted >= 5
