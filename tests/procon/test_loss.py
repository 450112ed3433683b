"""ProCon loss: closed forms, zero at the anchors, gradient along r, hinge, warm-up schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clinfuse.core.errors import ConfigError
from clinfuse.methods.procon.loss import (
    ProConConfig,
    procon_loss,
    procon_terms,
    projection,
    warmup_weight,
)

D, B, LAYERS = 16, 5, (1, 3, 4)


def _unit(g: torch.Generator) -> torch.Tensor:
    r = torch.randn(D, generator=g, dtype=torch.float64)
    return r / r.norm()


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h = {layer: torch.randn(B, D, generator=g).requires_grad_() for layer in LAYERS}
    r = {layer: _unit(g) for layer in LAYERS}
    return g, h, r


def test_projection_float64_matches_numpy():
    g, h, r = _setup()
    p = projection(h[1], r[1])
    assert p.dtype == torch.float64
    ref = h[1].detach().numpy().astype(np.float64) @ r[1].numpy()
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [1.0, 5.0])
def test_anchor_loss_exactly_zero_at_initial_model(factor):
    _, h, r = _setup()
    anchors = {layer: projection(h[layer], r[layer]).detach() for layer in LAYERS}
    cfg = ProConConfig(lam=0.3, warmup_steps=10, warmup_factor=factor)
    loss = procon_loss(h, r, anchors, cfg, step=0)
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.count_nonzero(h[layer].grad) == 0 for layer in LAYERS)


def test_anchor_loss_closed_form_and_gradient_parallel_to_r():
    g, h, r = _setup(1)
    anchors = {layer: torch.randn(B, generator=g, dtype=torch.float64) for layer in LAYERS}
    cfg = ProConConfig(lam=0.7, layers=LAYERS, warmup_steps=4, warmup_factor=3.0)
    loss = procon_loss(h, r, anchors, cfg, step=2)  # "step" warm-up: w = 3
    diffs = {layer: h[layer].detach().double() @ r[layer] - anchors[layer] for layer in LAYERS}
    expected = 0.7 * 3.0 * sum(float((d**2).sum()) for d in diffs.values()) / (B * len(LAYERS))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    for layer in LAYERS:
        grad = h[layer].grad.double()
        for i in range(B):
            cos = torch.nn.functional.cosine_similarity(grad[i], r[layer], dim=0).abs()
            assert cos.item() == pytest.approx(1.0, abs=1e-6)
        # d/dh_i = lam * w * 2 (p_i - p0_i) r / (B |S|)
        closed = 0.7 * 3.0 * 2 * diffs[layer][:, None] * r[layer][None] / (B * len(LAYERS))
        torch.testing.assert_close(grad, closed, rtol=1e-5, atol=1e-7)


def test_reduction_sum_is_batch_size_times_mean_and_layers_default_to_all():
    g, h, r = _setup(2)
    anchors = {layer: torch.zeros(B, dtype=torch.float64) for layer in LAYERS}
    mean = procon_loss(h, r, anchors, ProConConfig(lam=1.0), step=0)
    total = procon_loss(h, r, anchors, ProConConfig(lam=1.0, reduction="sum"), step=0)
    assert total.item() == pytest.approx(B * mean.item(), rel=1e-12)
    rows = procon_terms(h, r, anchors, ProConConfig())
    per_layer = torch.stack([projection(h[layer], r[layer]) ** 2 for layer in LAYERS]).mean(0)
    torch.testing.assert_close(rows, per_layer)


@pytest.mark.parametrize("sign", [1, -1])
def test_hinge_zero_beyond_margin_and_quadratic_inside(sign):
    r = {0: torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)}
    p = torch.tensor([-2.0, 0.0, 0.4, 0.5, 0.6, 3.0])
    h = {0: torch.stack([p, torch.ones_like(p), -torch.ones_like(p)], 1).requires_grad_()}
    tau = torch.full((6,), 0.1, dtype=torch.float64)
    cfg = ProConConfig(mode="hinge", lam=1.0, margin=0.4, hinge_sign=sign, reduction="sum")
    rows = procon_terms(h, r, {0: tau}, cfg)
    s = sign * (p.double() - 0.1)
    expected = torch.clamp(0.4 - s, min=0) ** 2
    torch.testing.assert_close(rows, expected)
    free = s >= 0.4 - 1e-12
    assert free.any() and (~free).any()
    assert torch.all(rows[free] == 0)
    procon_loss(h, r, {0: tau}, cfg, step=0).backward()
    assert torch.all(h[0].grad[free] == 0)
    assert torch.all(h[0].grad[~free][:, 0] * sign < 0)  # pushes s * p up
    assert torch.all(h[0].grad[:, 1:] == 0)


def test_hinge_without_anchors_uses_zero_threshold():
    r = {0: torch.tensor([0.0, 1.0])}
    h = {0: torch.tensor([[0.0, -1.0], [0.0, 2.0]])}
    cfg = ProConConfig(mode="hinge", lam=2.0, margin=0.5)
    assert procon_loss(h, r, None, cfg, step=0).item() == pytest.approx(2.0 * 1.5**2 / 2)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("step", [5.0, 5.0, 5.0, 1.0, 1.0]),
        ("linear", [5.0, 4.0, 3.0, 1.0, 1.0]),
        ("cosine", [5.0, 1 + 4 * 0.5 * (1 + math.cos(math.pi / 4)), 3.0, 1.0, 1.0]),
    ],
)
def test_warmup_schedule_values(shape, expected):
    cfg = ProConConfig(warmup_steps=4, warmup_factor=5.0, warmup_shape=shape)
    got = [warmup_weight(t, cfg) for t in (0, 1, 2, 4, 100)]
    assert got == pytest.approx(expected, abs=1e-12)
    assert warmup_weight(3, cfg) == pytest.approx(
        expected[2]
        if shape == "step"
        else {"linear": 2.0, "cosine": 1 + 4 * 0.5 * (1 + math.cos(3 * math.pi / 4))}[shape]
    )


def test_no_warmup_is_constant_one_and_loss_scales_with_weight():
    g, h, r = _setup(3)
    anchors = {layer: torch.zeros(B) for layer in LAYERS}
    assert {warmup_weight(t, ProConConfig()) for t in range(5)} == {1.0}
    cfg = ProConConfig(lam=1.0, warmup_steps=10, warmup_factor=4.0)
    early = procon_loss(h, r, anchors, cfg, step=0)
    late = procon_loss(h, r, anchors, cfg, step=10)
    assert early.item() == pytest.approx(4.0 * late.item(), rel=1e-12)


def test_errors_a_user_can_cause():
    _, h, r = _setup()
    with pytest.raises(ConfigError, match="initial projections"):
        procon_loss(h, r, None, ProConConfig(), step=0)
    with pytest.raises(ConfigError, match="without hidden states"):
        procon_loss(h, r, None, ProConConfig(mode="hinge", layers=(7,)), step=0)
    with pytest.raises(ConfigError, match="lam"):
        ProConConfig(lam=-1.0)
    with pytest.raises(ConfigError, match="warm-up"):
        ProConConfig(warmup_steps=-2)
