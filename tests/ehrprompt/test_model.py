"""Prompt transformer: training signal, planted tasks, masking and column-id invariants, losses."""

from __future__ import annotations

import dataclasses
import doctest
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.ehrprompt import model as model_module
from clinfuse.methods.ehrprompt.model import (
    PromptTransformer,
    PromptTransformerConfig,
    multitask_loss,
    task_losses,
)
from clinfuse.metrics.classification import roc_auc

TINY = PromptTransformerConfig(d_model=32, layers=2, heads=4, ff=64, dropout=0.1, head_hidden=16)
TASKS = {"death": "classification", "los": "regression"}
D_ENC, M = 16, 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: one thread is as fast, and immune to other jobs sharing the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(config: PromptTransformerConfig = TINY, seed: int = 0) -> PromptTransformer:
    torch.manual_seed(seed)
    return PromptTransformer(D_ENC, M, TASKS, {"death": 3}, config)


def planted(n: int, col: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise cells; cell ``col`` is shifted by +-2 along one axis according to the label."""
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, M, D_ENC, generator=g)
    x[:, col, 0] += 2.0 * (2 * y - 1).float()
    return x, y


def test_output_shapes_and_dtypes() -> None:
    model = tiny_model()
    x = torch.randn(5, M, D_ENC, dtype=torch.float64)  # any float dtype is cast to the params'
    out = model(x, torch.ones(5, M, dtype=torch.bool))
    assert set(out) == set(TASKS)
    assert out["death"].shape == (5, 3) and out["death"].dtype == torch.float32
    assert out["los"].shape == (5,) and out["los"].dtype == torch.float32
    assert model.encode(x).shape == (5, TINY.d_model)
    model.eval()
    att = model.attention_weights(x)
    assert att.shape == (5, M) and att.dtype == torch.float32
    assert torch.all(att >= 0) and torch.all(att.sum(1) <= 1 + 1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_every_parameter_changes_after_one_step(pooling: str) -> None:
    model = tiny_model(dataclasses.replace(TINY, pooling=pooling))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, M, D_ENC, generator=g)
    mask = torch.rand(8, M, generator=g) > 0.2
    targets = {"death": torch.randint(0, 3, (8,), generator=g), "los": torch.randn(8, generator=g)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    multitask_loss(model(x, mask), targets, model.tasks).backward()
    opt.step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    assert len(before) > 20  # projection, column ids, [CLS], 2 layers, final norm, 2 heads


@pytest.mark.parametrize("seed", [0])
def test_planted_cell_is_learned_and_attended(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = planted(512, col=2, g=g)
    x_test, y_test = planted(512, col=2, g=g)
    torch.manual_seed(seed)
    model = PromptTransformer(D_ENC, M, {"y": "classification"}, {"y": 2}, TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        idx = torch.randint(0, 512, (64,), generator=g)
        loss = multitask_loss(model(x_train[idx]), {"y": y_train[idx]}, model.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        prob = model(x_test)["y"].softmax(-1)[:, 1]
        attention = model.attention_weights(x_test).mean(0)
    # Bayes AUROC is Phi(2 * sqrt(2)) = 0.998
    assert roc_auc(prob.numpy(), y_test.numpy()) > 0.95
    assert int(attention.argmax()) == 2  # explanations point at the informative cell


def test_masked_cells_have_no_influence() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, M, D_ENC, generator=g)
    mask = torch.rand(7, M, generator=g) > 0.5
    mask[0] = False  # a row with every cell dropped still gives finite output
    mask[1] = torch.tensor([False, False, True, True, True, True])
    changed = x.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), D_ENC, generator=g) * 100.0
    changed[1, ~mask[1]] = float("nan")  # even NaN in a dropped cell cannot leak
    for pooling in ("cls", "mean"):
        model = tiny_model(dataclasses.replace(TINY, pooling=pooling)).eval()
        with torch.no_grad():
            a, b = model(x, mask), model(changed, mask)
            att_a, att_b = model.attention_weights(x, mask), model.attention_weights(changed, mask)
        for task in TASKS:
            assert torch.isfinite(a[task]).all()
            torch.testing.assert_close(a[task], b[task], rtol=0, atol=1e-6)
        torch.testing.assert_close(att_a, att_b, rtol=0, atol=1e-6)
        assert torch.all(att_a[~mask] == 0)
        # and present cells do matter
        moved = x.clone()
        moved[mask] += 1.0
        with torch.no_grad():
            assert not torch.allclose(model(moved, mask)["los"][1:], a["los"][1:])


def column_task(n_per: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell holds embedding A except one holding S; the label is S's column."""
    g = torch.Generator().manual_seed(5)
    common, special = torch.randn(D_ENC, generator=g), torch.randn(D_ENC, generator=g)
    y = torch.arange(M).repeat(n_per)
    x = common.expand(y.numel(), M, D_ENC).clone()
    x[torch.arange(y.numel()), y] = special
    return x, y


def test_column_embeddings_tell_identical_cells_apart() -> None:
    x, y = column_task(n_per=8)
    torch.manual_seed(0)
    model = PromptTransformer(D_ENC, M, {"col": "classification"}, {"col": M}, TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(120):
        loss = multitask_loss(model(x), {"col": y}, model.tasks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x)["col"].argmax(-1) == y).float().mean()
    assert accuracy > 0.95

    # without column ids the rows are permutations of one multiset: identical outputs, chance level
    blind = PromptTransformer(
        D_ENC,
        M,
        {"col": "classification"},
        {"col": M},
        dataclasses.replace(TINY, column_embeddings=False),
    ).eval()
    assert blind.column_embedding is None
    with torch.no_grad():
        logits = blind(x[:M])["col"]
    torch.testing.assert_close(logits, logits[:1].expand_as(logits), rtol=0, atol=1e-5)


def test_input_errors() -> None:
    model = tiny_model()
    with pytest.raises(DataError, match="width does not match") as err:
        model(torch.randn(2, M, D_ENC + 1))
    assert "d_enc = 17" in str(err.value)
    with pytest.raises(DataError, match="number of cells"):
        model(torch.randn(2, M + 1, D_ENC))
    with pytest.raises(DataError, match="3-D"):
        model(torch.randn(M, D_ENC))
    with pytest.raises(DataError, match="floating point"):
        model(torch.ones(2, M, D_ENC, dtype=torch.int64))
    with pytest.raises(DataError, match="bool"):
        model(torch.randn(2, M, D_ENC), torch.ones(2, M))
    with pytest.raises(DataError, match="shape does not match"):
        model(torch.randn(2, M, D_ENC), torch.ones(2, M - 1, dtype=torch.bool))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="heads must divide"):
        PromptTransformer(D_ENC, M, TASKS, {"death": 2}, dataclasses.replace(TINY, heads=5))
    with pytest.raises(ConfigError, match="n_classes >= 2"):
        PromptTransformer(D_ENC, M, TASKS, {}, TINY)
    with pytest.raises(ConfigError, match="unknown kind"):
        PromptTransformer(D_ENC, M, {"x": "ranking"}, None, TINY)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="no task"):
        PromptTransformer(D_ENC, M, {}, None, TINY)
    with pytest.raises(ConfigError, match="unknown pooling"):
        PromptTransformer(D_ENC, M, TASKS, {"death": 2}, dataclasses.replace(TINY, pooling="max"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.d_model = 64  # type: ignore[misc]


def test_head_hidden_zero_gives_linear_heads() -> None:
    model = tiny_model(dataclasses.replace(TINY, head_hidden=0))
    assert all(isinstance(h, torch.nn.Linear) for h in model.heads.values())
    assert model(torch.randn(3, M, D_ENC))["death"].shape == (3, 3)


def test_losses_match_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    logits, cls = torch.randn(6, 3, generator=g), torch.tensor([0, 2, 1, -100, 2, 0])
    pred, true = torch.randn(6, generator=g), torch.randn(6, generator=g) * 3
    true[4] = float("nan")
    outputs, targets = {"death": logits, "los": pred}, {"death": cls, "los": true}
    keep_c, keep_r = cls != -100, ~torch.isnan(true)
    ce = F.cross_entropy(logits[keep_c], cls[keep_c])
    u = pred[keep_r] - true[keep_r]
    closed = {
        "mse": (u**2).mean(),
        "l1": u.abs().mean(),
        "huber": torch.where(u.abs() <= 1, 0.5 * u**2, u.abs() - 0.5).mean(),
    }
    for name, value in closed.items():
        parts = task_losses(outputs, targets, TASKS, name)  # type: ignore[arg-type]
        torch.testing.assert_close(parts["los"], value)
        torch.testing.assert_close(parts["death"], ce)
        total = multitask_loss(outputs, targets, TASKS, {"los": 0.25}, name)  # type: ignore[arg-type]
        torch.testing.assert_close(total, ce + 0.25 * value)
    # a task without any labelled row contributes zero but keeps the graph connected
    p = pred.clone().requires_grad_()
    empty = task_losses({"los": p}, {"los": torch.full((6,), float("nan"))}, {"los": "regression"})
    assert float(empty["los"].detach()) == 0.0
    empty["los"].backward()
    assert p.grad is not None


def test_loss_errors() -> None:
    outputs = {"death": torch.zeros(2, 2), "los": torch.zeros(2)}
    targets = {"death": torch.tensor([0, 1]), "los": torch.zeros(2)}
    with pytest.raises(ConfigError, match="unknown regression loss"):
        multitask_loss(outputs, targets, TASKS, regression_loss="l3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="weights name tasks"):
        multitask_loss(outputs, targets, TASKS, {"surgery": 1.0})
    with pytest.raises(DataError, match="lacks an output or a target"):
        multitask_loss(outputs, {"death": targets["death"]}, TASKS)
    with pytest.raises(DataError, match="3 targets for 2 rows"):
        multitask_loss(outputs, {**targets, "los": torch.zeros(3)}, TASKS)


def test_doctests() -> None:
    result = doctest.testmod(model_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
