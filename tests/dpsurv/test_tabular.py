"""Real survival data read from wheel files: the same rows as sksurv's and lifelines' loaders."""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import DataError, MissingExtraError, UnknownNameError
from clinfuse.methods.dpsurv import tabular as tabular_module
from clinfuse.methods.dpsurv.tabular import load_tabular, tabular_names

# name -> (sksurv loader, kwargs, event field, time field, row mask on sksurv's x or None)
SKSURV = {
    "whas500": ("load_whas500", {}, "fstat", "lenfol", None),
    "veteran": ("load_veterans_lung_cancer", {}, "Status", "Survival_in_days", None),
    "gbsg2": ("load_gbsg2", {}, "cens", "time", None),
    "flchain": ("load_flchain", {}, "death", "futime", lambda x: x["creatinine"].notna()),
    "breast_cancer": ("load_breast_cancer", {}, "e.tdm", "t.tdm", None),
    "actg320": ("load_aids", {"endpoint": "aids"}, "censor", "time", None),
    "actg320_death": ("load_aids", {"endpoint": "death"}, "censor_d", "time_d", None),
}
# sizes and event counts measured once with the sksurv/lifelines loaders
SIZES = {
    "whas500": (500, 215),
    "veteran": (137, 128),
    "gbsg2": (686, 299),
    "breast_cancer": (198, 51),
    "actg320": (1151, 96),
    "rossi": (432, 114),
    "larynx": (90, 50),
    "kidney_transplant": (863, 140),
}


def _one_hot_like_sksurv(x: pd.DataFrame) -> pd.DataFrame:
    from sksurv.column import encode_categorical

    return encode_categorical(x)


@pytest.mark.parametrize("name", sorted(SKSURV))
def test_sksurv_sets_match_sksurv_loaders(name):
    datasets = pytest.importorskip("sksurv.datasets")
    loader, kwargs, ev, tm, mask = SKSURV[name]
    x, y = getattr(datasets, loader)(**kwargs)
    if name == "flchain":
        x = x.drop(columns=["chapter"])
    if mask is not None:
        keep = mask(x).to_numpy()
        x, y = x[keep], y[keep]
    ours = load_tabular(name)
    assert ours.X.shape[0] == len(y) and ours.X.dtype == np.float64
    np.testing.assert_array_equal(ours.time, y[tm])  # row by row
    np.testing.assert_array_equal(ours.event, y[ev].astype(np.int64))
    oracle = _one_hot_like_sksurv(x.reset_index(drop=True))
    assert sorted(ours.feature_names) == sorted(oracle.columns)
    for j, col in enumerate(ours.feature_names):
        np.testing.assert_array_equal(ours.X[:, j], oracle[col].to_numpy(np.float64), err_msg=col)
    assert "scikit-survival" in ours.source


@pytest.mark.parametrize("name", ["rossi", "lung", "larynx", "kidney_transplant"])
def test_lifelines_sets_match_lifelines_loaders(name):
    datasets = pytest.importorskip("lifelines.datasets")
    spec = tabular_module._SETS[name]
    df = getattr(datasets, f"load_{name}")().drop(columns=list(spec.drop))
    df = df.dropna().reset_index(drop=True)
    ours = load_tabular(name)
    np.testing.assert_array_equal(ours.time, df[spec.time].to_numpy(np.float64))
    np.testing.assert_array_equal(ours.event, df[spec.event].to_numpy(np.int64))
    for j, col in enumerate(ours.feature_names):
        base, _, level = col.partition("=")
        want = (df[base].astype(str) == level) if level else df[base]
        np.testing.assert_array_equal(ours.X[:, j], want.to_numpy(np.float64), err_msg=col)
    assert len(ours.feature_names) == df.shape[1] - 2
    assert "lifelines" in ours.source


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_and_event_counts(name):
    n, events = SIZES[name]
    d = load_tabular(name)
    assert d.X.shape[0] == n == len(d.time) == len(d.event)
    assert int(d.event.sum()) == events
    assert np.isfinite(d.X).all() and (d.time >= 0).all()


def test_categoricals_one_hot_drop_first_numeric_raw():
    d = load_tabular("gbsg2")
    assert "tgrade=II" in d.feature_names and "tgrade=III" in d.feature_names
    assert "tgrade=I" not in d.feature_names and "menostat=Post" in d.feature_names
    age = d.X[:, d.feature_names.index("age")]
    assert age.max() > 70  # raw years, not standardised
    v = load_tabular("veteran")
    cell = v.X[:, [i for i, f in enumerate(v.feature_names) if f.startswith("Celltype=")]]
    assert cell.shape[1] == 3 and set(cell.sum(1).tolist()) <= {0.0, 1.0}


def test_flchain_drops_the_leaking_cause_of_death():
    d = load_tabular("flchain")
    assert not any(f.startswith("chapter") for f in d.feature_names)
    assert d.X.shape[0] == 6524


def test_lung_median_imputation():
    datasets = pytest.importorskip("lifelines.datasets")
    raw = datasets.load_lung()
    d = load_tabular("lung", missing="median")
    assert d.X.shape[0] == len(raw) == 228
    col = d.feature_names.index("meal.cal")
    gaps = raw["meal.cal"].isna().to_numpy()
    np.testing.assert_array_equal(d.X[gaps, col], raw["meal.cal"].median())
    np.testing.assert_array_equal(d.X[~gaps, col], raw["meal.cal"][~gaps])


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'whas500'") as err:
        load_tabular("whas50")
    assert "rossi" in str(err.value)
    assert "whas500" in tabular_names() and len(tabular_names()) >= 10


def test_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "sksurv" else real(n, *a)
    )
    with pytest.raises(MissingExtraError, match="scikit-survival") as err:
        load_tabular("whas500")
    assert "pip install scikit-survival" in str(err.value)
    assert load_tabular("rossi").X.shape == (432, 7)  # lifelines still found


def test_missing_file_is_a_data_error(monkeypatch):
    spec = tabular_module._SETS["rossi"]
    bad = type(spec)(**{**spec.__dict__, "file": "datasets/no_such.csv"})
    monkeypatch.setitem(tabular_module._SETS, "rossi", bad)
    with pytest.raises(DataError, match="has no datasets/no_such.csv"):
        load_tabular("rossi")


def test_reads_without_importing_the_packages():
    code = (
        "import sys\n"
        "from clinfuse.methods.dpsurv.tabular import load_tabular\n"
        "load_tabular('whas500'); load_tabular('rossi')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sksurv', 'lifelines')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_doctests():
    result = doctest.testmod(tabular_module)
    assert result.failed == 0 and result.attempted >= 1
