from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clinfuse.core.loop import fit_loop
from clinfuse.core.runs import RunDir
from clinfuse.core.seed import seed_everything


def _setup(seed: int = 0):
    seed_everything(seed)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)
    xv = torch.randn(32, 3, generator=g)
    yv = xv @ torch.tensor([1.0, -2.0, 0.5])
    model = nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)

    def step(m, batch, epoch):
        xb, yb = batch
        loss = nn.functional.mse_loss(m(xb).squeeze(-1), yb)
        return loss, {"mse": float(loss.detach())}

    def ev(m):
        return {"loss": float(nn.functional.mse_loss(m(xv).squeeze(-1), yv))}

    return model, opt, loader, step, ev


def _fit(run, epochs, resume=False, patience=None):
    model, opt, loader, step, ev = _setup()
    res = fit_loop(
        model=model,
        optimizer=opt,
        train_loader=loader,
        step_fn=step,
        eval_fn=ev,
        run=run,
        epochs=epochs,
        monitor="loss",
        patience=patience,
        progress=False,
        resume=resume,
    )
    return model, res


def test_loop_learns_and_checkpoints(tmp_path) -> None:
    rd = RunDir.create(tmp_path / "a", "toy", {})
    model, res = _fit(rd, 30)
    assert res.best_score < 0.05  # the planted linear map is recovered
    assert torch.allclose(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=0.1)
    best = rd.load_checkpoint("best")
    assert best["epoch"] == res.best_epoch
    assert len(rd.read_history()) == 30 and "train_mse" in rd.read_history()[0]


def test_resume_equals_uninterrupted(tmp_path) -> None:
    straight, _ = _fit(RunDir.create(tmp_path / "s", "toy", {}), 6)
    rd = RunDir.create(tmp_path / "r", "toy", {})
    _fit(rd, 3)
    resumed, res = _fit(rd, 6, resume=True)
    assert res.epochs_run == 6
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [int(float(r["epoch"])) for r in rd.read_history()] == [1, 2, 3, 4, 5, 6]


def test_early_stopping(tmp_path) -> None:
    model, opt, loader, step, ev = _setup()
    scores = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    res = fit_loop(
        model=model,
        optimizer=opt,
        train_loader=loader,
        step_fn=step,
        eval_fn=lambda m: {"loss": next(scores)},
        run=None,
        epochs=7,
        monitor="loss",
        patience=2,
        progress=False,
    )
    assert res.stopped_early and res.epochs_run == 4 and res.best_epoch == 2


def test_nan_loss_is_reported(tmp_path) -> None:
    model, opt, loader, _, ev = _setup()

    def bad(m, batch, epoch):
        return torch.tensor(float("nan"), requires_grad=True), {}

    with pytest.raises(FloatingPointError, match="learning rate"):
        fit_loop(
            model=model,
            optimizer=opt,
            train_loader=loader,
            step_fn=bad,
            eval_fn=ev,
            run=None,
            epochs=1,
            monitor="loss",
            progress=False,
        )


def test_time_budget_stops_after_the_epoch_that_spends_it(tmp_path) -> None:
    import time

    model, opt, loader, step, ev = _setup()
    res = fit_loop(
        model=model,
        optimizer=opt,
        train_loader=loader,
        step_fn=step,
        eval_fn=lambda m: (time.sleep(0.2), ev(m))[1],
        run=None,
        epochs=50,
        monitor="loss",
        progress=False,
        max_seconds=0.5,
    )
    assert res.stopped_early and 3 <= res.epochs_run <= 4  # 0.2 s per epoch, budget 0.5 s
