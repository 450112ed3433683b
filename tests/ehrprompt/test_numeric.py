"""The numeric and linear paths of ehrprompt: value encodings, cross-fitted linear offsets, and
the fusion model reading them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from clinfuse.methods.ehrprompt.model import PromptTransformer, PromptTransformerConfig
from clinfuse.methods.ehrprompt.numeric import LinearPath, fit_value_edges, value_tensor
from clinfuse.methods.ehrprompt.prompts import ColumnSpec


def test_value_tensor_is_monotone_and_zero_where_missing_or_not_numeric() -> None:
    f = pd.DataFrame({"x": [0.0, 1.0, 5.0, np.nan, 9.0], "c": ["a", "b", "a", "b", "a"]})
    edges = fit_value_edges(f, ["x", "c"], ["x"], 4)
    v = value_tensor(f, ["x", "c"], edges, 4)
    assert v.shape == (5, 2, 4)
    assert torch.all(v[:, 1] == 0) and torch.all(v[3, 0] == 0)
    total = v[:, 0].sum(1)  # the encoding's sum grows with the value (a monotone map)
    assert total[0] < total[1] < total[2] < total[4]
    assert torch.allclose(v[4, 0], torch.ones(4))


def test_linear_path_offsets_are_cross_fitted() -> None:
    """Each training row's offset comes from a model that did not see it: on pure noise the
    cross-fitted log loss is no better than the prevalence's, the in-sample one is."""
    rng = np.random.default_rng(0)
    n, p = 300, 30
    f = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"x{i}" for i in range(p)])
    y = rng.integers(0, 2, n)
    path = LinearPath([ColumnSpec(c, "numeric") for c in f.columns], "classification", seed=0)
    oof = path.fit(f, y)
    path.C = 10.0  # a weakly regularised in-sample fit for contrast
    path.refit(f, y)
    ins = path.outputs(f)
    prior = -np.mean(np.log(np.where(y == 1, y.mean(), 1 - y.mean())))
    loss = lambda lp: -np.mean(lp[np.arange(n), y])  # noqa: E731
    assert loss(oof) > prior - 0.01
    assert loss(ins) < prior - 0.02


def test_offset_passes_through_and_linear_term_reads_features() -> None:
    torch.manual_seed(0)
    cfg = PromptTransformerConfig(d_model=16, heads=2, value_bins=3, tabular_features=5)
    model = PromptTransformer(8, 4, {"d": "classification"}, {"d": 2}, cfg).eval()
    x, vals, tab = torch.randn(6, 4, 8), torch.rand(6, 4, 3), torch.randn(6, 5)
    base = model(x, values=vals, tabular=tab)["d"]
    off = torch.randn(6, 2)
    shifted = model(x, values=vals, tabular=tab, offset={"d": off})["d"]
    assert torch.allclose(shifted - base, off, atol=1e-6)
    assert not torch.allclose(model(x, values=vals * 0)["d"], model(x, values=vals)["d"])
    with torch.no_grad():
        model.linear["d"].weight.fill_(1.0)
    assert not torch.allclose(model(x, tabular=tab)["d"], model(x, tabular=tab * 2)["d"])
