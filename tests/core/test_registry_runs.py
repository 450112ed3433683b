from __future__ import annotations

import json

import pytest
import torch

from clinfuse.core.errors import RunDirError, UnknownNameError
from clinfuse.core.registry import Registry
from clinfuse.core.runs import RunDir, atomic_write_text


def test_registry_unknown_name_close_matches() -> None:
    reg: Registry[int] = Registry("method")
    reg.register("dib")(1)
    reg.register("tunsr")(2)
    assert reg.get("dib") == 1 and reg.names() == ["dib", "tunsr"]
    with pytest.raises(UnknownNameError) as e:
        reg.get("dbi")
    assert "did you mean: dib" in str(e.value) and "dib, tunsr" in str(e.value)
    with pytest.raises(ValueError):
        reg.register("dib")(3)


def test_run_dir_layout_and_reopen(tmp_path) -> None:
    rd = RunDir.create(tmp_path / "r", "dib", {"epochs": 2, "preset": "quick"}, seed=1)
    assert json.loads((rd.path / "config.json").read_text())["method"] == "dib"
    env = json.loads((rd.path / "env.json").read_text())
    assert env["seed"] == 1 and env["torch"] == torch.__version__
    rd.log_epoch({"epoch": 1, "loss": 0.5})
    rd.log_epoch({"epoch": 2, "loss": 0.25, "acc": 0.9})
    hist = rd.read_history()
    assert [h["loss"] for h in hist] == ["0.5", "0.25"] and hist[0]["acc"] == ""
    rd.truncate_history(1)
    assert len(rd.read_history()) == 1
    rd.write_metrics({"a": 1.0})
    rd.write_metrics({"b": 2.0})
    assert rd.read_metrics() == {"a": 1.0, "b": 2.0}
    rd.save_checkpoint("best", {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert torch.equal(rd.load_checkpoint("best")["model"]["w"], torch.ones(2))
    assert RunDir.open(rd.path, "dib").config_dict()["epochs"] == 2
    with pytest.raises(RunDirError, match="is a 'dib' run"):
        RunDir.open(rd.path, "tunsr")
    with pytest.raises(RunDirError, match="already holds"):
        RunDir.create(rd.path, "dib", {})


def test_open_refuses_non_runs(tmp_path) -> None:
    with pytest.raises(RunDirError, match="not a directory"):
        RunDir.open(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    with pytest.raises(RunDirError, match="not a clinfuse run") as e:
        RunDir.open(tmp_path / "x")
    assert "notes.txt" in str(e.value)
    (tmp_path / "x" / "config.json").write_text('{"foo": 1}')
    with pytest.raises(RunDirError, match="not a clinfuse run"):
        RunDir.open(tmp_path / "x")
    assert not (tmp_path / "x" / "checkpoints").exists()  # nothing written


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch) -> None:
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]  # no temp file left


def test_final_checkpoint_is_both_best_and_last(tmp_path) -> None:
    rd = RunDir.create(tmp_path / "r", "m", {"a": 1}, seed=0)
    state = {"w": torch.arange(4.0), "epoch": 3}
    assert rd.save_final_checkpoint(state) == rd.checkpoint_path("best")
    for kind in ("best", "last"):
        loaded = rd.load_checkpoint(kind)
        assert torch.equal(loaded["w"], state["w"]) and loaded["epoch"] == 3
    assert not list(rd.checkpoints.glob("*.tmp*"))
