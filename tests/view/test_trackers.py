"""--log-with: the logs are read back with TensorBoard's EventAccumulator and the MLflow client,
and each value equals the metrics.csv row of its epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clinfuse.cli import main
from clinfuse.core import trackers
from clinfuse.core.errors import ConfigError
from clinfuse.core.loop import fit_loop
from clinfuse.core.runs import RunDir
from clinfuse.core.seed import seed_everything

CONFIG = {"lr": 0.05, "modalities": ["text", "audio"], "rank": None, "preset": "toy"}


def _fit(run: RunDir, epochs: int, log_with: str | None) -> None:
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x, xv = torch.randn(48, 3, generator=g), torch.randn(16, 3, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5])
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def step(m, batch, epoch):
        xb, yb = batch
        loss = nn.functional.mse_loss(m(xb).squeeze(-1), yb)
        return loss, {"mse": float(loss.detach())}

    def ev(m):
        return {"loss": float(nn.functional.mse_loss(m(xv).squeeze(-1), xv @ w)), "r": 0.5}

    fit_loop(
        model=model,
        optimizer=opt,
        train_loader=DataLoader(TensorDataset(x, x @ w), batch_size=16),
        step_fn=step,
        eval_fn=ev,
        run=run,
        epochs=epochs,
        monitor="loss",
        progress=False,
        log_with=log_with,
    )


def _scalars(run_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (folder,) = [p for p in (run_path / "tensorboard").iterdir() if p.is_dir()]
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_every_epoch_of_metrics_csv(tmp_path):
    pytest.importorskip("tensorboard")
    rd = RunDir.create(tmp_path / "run", "toy", CONFIG)
    _fit(rd, 4, "tensorboard")
    scalars = _scalars(rd.path)
    history = rd.read_history()
    assert len(history) == 4
    for col in ("train_loss", "train_mse", "valid_loss", "valid_r", "train_seconds"):
        assert sorted(scalars[col]) == [1, 2, 3, 4]
        for row in history:
            assert scalars[col][int(row["epoch"])] == pytest.approx(float(row[col]), rel=1e-5)
    assert "epoch" not in scalars
    hparams = list((rd.path / "tensorboard").rglob("hparams.yml"))
    assert hparams and "modalities" in hparams[0].read_text()


def test_mlflow_store_holds_config_and_every_epoch(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    rd = RunDir.create(tmp_path / "run", "toy", CONFIG)
    _fit(rd, 3, "mlflow")
    client = mlflow.MlflowClient(tracking_uri=trackers.mlflow_uri(rd.path))
    (exp,) = [e for e in client.search_experiments() if e.name == "clinfuse-toy"]
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.05" and run.data.params["rank"] == "None"
    history = rd.read_history()
    for col in ("train_loss", "valid_loss"):
        got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, col)}
        want = {int(r["epoch"]): float(r[col]) for r in history}
        assert got.keys() == want.keys() and all(
            got[k] == pytest.approx(want[k], rel=1e-5) for k in want
        )
    assert (rd.path / "mlflow.db").is_file()


def test_unknown_tracker_is_a_clear_error_before_any_run_folder(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown tracker 'tensorbord'"):
        trackers.check_names("tensorbord")
    out = tmp_path / "never"
    code = main(["fit", "dib", "--log-with", "tensorbord", "--out", str(out)])
    assert code == 2 and not out.exists()
    assert "tensorboard | mlflow | wandb" in capsys.readouterr().err


def test_cli_fit_with_tensorboard_logs_every_epoch_and_the_test_metrics(tmp_path, capsys):
    """`clinfuse fit dib --preset quick --log-with tensorboard` (shortened to 2 epochs)."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "dib"
    args = ["-q", "fit", "dib", "--preset", "quick", "--log-with", "tensorboard"]
    code = main([*args, "--set", "epochs=2", "--out", str(out)])
    assert code == 0 and "tensorboard logs written inside" in capsys.readouterr().out
    scalars = _scalars(out)
    history = RunDir(out).read_history()
    assert sorted(scalars["valid_acc2"]) == [1, 2]
    for row in history:
        want = float(row["train_loss"])  # metrics.csv keeps 6 significant digits
        assert scalars["train_loss"][int(row["epoch"])] == pytest.approx(want, rel=1e-5)
    metrics = RunDir(out).read_metrics()
    assert scalars["test_acc2"][2] == pytest.approx(metrics["test_acc2"], rel=1e-6)


def test_a_method_with_its_own_loop_replays_metrics_csv(tmp_path):
    """Methods that do not use fit_loop get their metrics.csv rows logged after training."""
    pytest.importorskip("tensorboard")
    rd = RunDir.create(tmp_path / "run", "own", {"a": 1})
    for epoch in (1, 2, 3):
        rd.log_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "note": "text"})
    rd.write_metrics({"test_auc": 0.75, "valid_auc": 0.7})
    with trackers.requested("tensorboard") as request:
        request.finish(rd)
    scalars = _scalars(rd.path)
    assert scalars["train_loss"] == pytest.approx({1: 1.0, 2: 0.5, 3: 1.0 / 3}, rel=1e-5)
    assert scalars["test_auc"] == pytest.approx({3: 0.75}) and "valid_auc" not in scalars
