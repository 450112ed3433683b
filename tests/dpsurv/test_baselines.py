"""DPsurv baselines: the Cox model against scikit-survival (Breslow ties), the discrete head, the
padded bags and ABMIL's attention on a planted multiple-instance problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinfuse.methods.dpsurv import baselines as bl
from clinfuse.methods.dpsurv.losses import discrete_nll
from clinfuse.methods.dpsurv.train import TrainConfig, train_module


def _fit_cox(x: np.ndarray, t: np.ndarray, e: np.ndarray) -> bl.CoxLinear:
    model = bl.CoxLinear(x.shape[1], x.mean(0), x.std(0))
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=500, line_search_fn="strong_wolfe",
        tolerance_grad=1e-12, tolerance_change=1e-15,
    )  # fmt: skip
    xt, tt, et = torch.as_tensor(x), torch.as_tensor(t), torch.as_tensor(e, dtype=torch.float64)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = bl.cox_partial_nll(model(xt), tt, et)
        loss.backward()
        return loss

    opt.step(closure)
    return model


def test_cox_matches_scikit_survival_breslow_on_whas500() -> None:
    datasets = pytest.importorskip("sksurv.datasets")
    linear = pytest.importorskip("sksurv.linear_model")
    import pandas as pd

    x_df, y = datasets.load_whas500()
    x_df = pd.get_dummies(x_df, drop_first=True).astype(float)
    x = x_df.to_numpy()
    t, e = y["lenfol"].astype(float), y["fstat"].astype(int)
    ref = linear.CoxPHSurvivalAnalysis(alpha=0.0, ties="breslow").fit(x_df, y)
    model = _fit_cox(x, t, e)
    np.testing.assert_allclose(model.coefficients(), ref.coef_, atol=2e-4, rtol=1e-3)
    # Breslow survival curves (at the reference's own event times) agree too
    eta = x @ model.coefficients()
    jumps, cumhaz = bl.breslow_cumhaz(eta, t, e)
    grid = np.quantile(t[e == 1], [0.1, 0.5, 0.9])
    ours = bl.cox_survival(eta[:5], jumps, cumhaz, grid)
    theirs = np.stack([fn(grid) for fn in ref.predict_survival_function(x_df.iloc[:5])])
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_breslow_with_zero_coefficients_is_nelson_aalen() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(1, 20, size=200).astype(float)
    e = rng.integers(0, 2, size=200)
    jumps, cumhaz = bl.breslow_cumhaz(np.zeros(200), t, e)
    na = np.cumsum([np.sum((t == u) & (e == 1)) / np.sum(t >= u) for u in jumps])
    np.testing.assert_allclose(cumhaz, na, rtol=1e-12)


def test_discrete_head_gives_monotone_survival_and_interpolates_at_edges() -> None:
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    s = bl.hazards_to_survival(logits)
    assert torch.all(s[:, 0] == 1) and torch.all(s[:, 1:] <= s[:, :-1])
    edges = np.array([1e-6, 1.0, 2.0, 4.0, 8.0, 1e6])
    np.testing.assert_allclose(bl.interp_survival(s, edges, edges), s.double().numpy())


def test_pad_bags_masks_the_padding_and_errors_on_nothing() -> None:
    x, m = bl.pad_bags([np.ones((3, 2)), 2 * np.ones((1, 2))])
    assert x.shape == (2, 3, 2) and m.tolist() == [[True] * 3, [True, False, False]]
    assert float(x[1, 1:].abs().sum()) == 0.0
    with pytest.raises(Exception, match="no bags"):
        bl.pad_bags([])


def test_abmil_learns_to_attend_to_the_key_instance() -> None:
    """Planted MIL survival: a bag is high-risk when it holds one 'tumour' instance; ABMIL must
    rank those bags first and put most attention on that instance."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, d = 240, 8
    key = np.zeros(d)
    key[0] = 4.0
    bags, high = [], rng.random(n) < 0.5
    for i in range(n):
        b = rng.normal(size=(int(rng.integers(5, 15)), d))
        if high[i]:
            b[0] += key
        bags.append(b.astype(np.float32))
    time = np.where(high, rng.exponential(1.0, n), rng.exponential(5.0, n)) + 1e-3
    edges = np.r_[1e-6, np.quantile(time, [0.25, 0.5, 0.75]), 1e6]
    y = torch.as_tensor(np.searchsorted(edges, time, side="left") - 1)
    cens = torch.zeros(n)
    model = bl.GatedABMIL(d, 4, hidden=16, attn=8, dropout=0.0)

    def loss_fn(idx: np.ndarray) -> torch.Tensor:
        s = bl.hazards_to_survival(model(*bl.pad_bags([bags[i] for i in idx])))
        return discrete_nll(s, y[idx], cens[idx], alpha=0.0)

    train_module(model, n, loss_fn, None, TrainConfig(lr=1e-2, epochs=30, progress=False))
    with torch.no_grad():
        x, mask = bl.pad_bags(bags)
        risk = -bl.hazards_to_survival(model(x, mask)).sum(1).numpy()
        attn, _ = model.attention(x, mask)
    assert risk[high].mean() > risk[~high].mean()
    from clinfuse.metrics.survival import harrell_c

    assert harrell_c(time, np.ones(n), risk) > 0.7
    assert float(attn[torch.as_tensor(high), 0].mean()) > 0.5  # the key instance dominates
