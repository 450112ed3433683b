"""One contract over every registered method and builder: a tiny fit saves a run that reloads
to the same predictions and metrics; a bad setting is refused before anything is written;
`clinfuse ls NAME` describes every config field."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from tests.conftest import TINY_FIT

import clinfuse
from clinfuse.builders import load_all as load_builders
from clinfuse.cli import main
from clinfuse.core.builder import BUILDERS
from clinfuse.core.learner import METHODS
from clinfuse.methods import load_all

load_all()
load_builders()

HEAVY = {"procon", "deepmedix"}
"""Methods whose tiny fit loads a language model (the slow suite runs them)."""


def _methods():
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in METHODS.names()]


def test_every_method_has_a_tiny_setting() -> None:
    assert set(TINY_FIT) == set(METHODS.names())


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("name", _methods())
def test_a_saved_run_reloads_to_the_same_predictions(name: str, tmp_path) -> None:
    cls = METHODS.get(name)
    learner, run = clinfuse.run(
        name, preset=cls.demo_preset, overrides=[*TINY_FIT[name], "progress=false"],
        out=tmp_path / name,
    )  # fmt: skip
    for part in ("config.json", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run.path / part).is_file(), part
    again = clinfuse.load(run.path)
    assert type(again) is cls
    data = again.load_data(None)
    _same(again.predict(data, "test"), learner.predict(data, "test"))
    reloaded, original = again.evaluate(data, "test"), learner.evaluate(data, "test")
    # the original may add metrics of baselines fitted beside it (not part of the checkpoint)
    assert reloaded and set(reloaded) <= set(original)
    _same(reloaded, {k: original[k] for k in reloaded})


@pytest.mark.parametrize("name", [*METHODS.names(), *BUILDERS.names()])
@pytest.mark.parametrize(
    ("setting", "words"),
    [("no_such_field=1", "unknown config key"), ("seed=not-a-number", "seed")],
)
def test_a_bad_setting_is_refused_before_anything_is_written(
    name: str, setting: str, words: str, tmp_path, capsys
) -> None:
    out = tmp_path / "never"
    command = "build" if name in BUILDERS.names() else "fit"
    assert main([command, name, "--set", setting, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert words in err and "fix:" in err
    assert not out.exists()


@pytest.mark.parametrize("name", [*METHODS.names(), *BUILDERS.names()])
def test_ls_describes_every_config_field(name: str, capsys) -> None:
    assert main(["ls", name]) == 0
    text = capsys.readouterr().out
    cls = BUILDERS.get(name) if name in BUILDERS.names() else METHODS.get(name)
    for f in dataclasses.fields(cls.config_cls):
        assert f"  {f.name} = " in text, f"{name}: field {f.name} missing from `clinfuse ls`"
