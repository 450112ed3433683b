"""DIB objective: reductions to the task loss, agreement with independent formulas, stability."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clinfuse.info.renyi import gaussian_gram, knn_sigma, mutual_information, renyi_entropy
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.losses import beta_scale, dib_loss, modality_mi
from clinfuse.methods.dib.model import DIBModel, gaussian_kl

MODS = ("text", "audio", "vision")
DIMS = {"text": 7, "audio": 3, "vision": 4}
TINY = {"hidden": 8, "n_heads": 2, "n_layers": 1, "ib_hidden": 16, "batch_size": 8}


def fake_output(n: int = 24, d: int = 6, seed: int = 0, heads: bool = False) -> dict:
    """A DIBModel-shaped output of random tensors (the loss does not care where they came from)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    out = {
        "pred": r(n),
        "h": {m: r(n, d) for m in MODS},
        "z": {m: r(n, d) for m in MODS},
        "mu": {m: r(n, d) for m in MODS},
        "sigma": {m: r(n, d).abs() + 0.1 for m in MODS},
        "fused": r(n, d),
        "z_fused": r(n, d),
        "mu_fused": r(n, d),
        "sigma_fused": r(n, d).abs() + 0.1,
    }
    if heads:
        out["pred_m"] = {m: r(n) for m in MODS}
    return out


def label_batch(n: int = 24, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"label": torch.empty(n, dtype=torch.float64).uniform_(-3, 3, generator=g)}


# --- independent numpy oracle of the Renyi terms ------------------------------------------------


def np_knn_sigma(x: np.ndarray, k: int) -> float:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return float(np.sort(d, axis=1)[:, :k].mean())


def np_gram(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / sigma**2)


def np_entropy(K: np.ndarray, alpha: float, rank: int | None) -> float:
    lam = np.clip(np.sort(np.linalg.eigvalsh(K / np.trace(K)))[::-1], 0, None)
    n = len(lam)
    if rank is None or rank >= n - 1:
        return float(np.log2((lam**alpha).sum()) / (1 - alpha))
    top = lam[:rank]
    tail = (1 - top.sum()) / (n - rank)
    return float(np.log2((top**alpha).sum() + (n - rank) * tail**alpha) / (1 - alpha))


# --- reductions --------------------------------------------------------------------------------


def test_no_ib_total_is_the_task_loss():
    out, batch = fake_output(), label_batch()
    cfg = DIBConfig(ib="none", beta=10.0)
    total, parts = dib_loss(out, batch, cfg)
    expected = F.l1_loss(out["pred"], batch["label"])
    assert torch.equal(total, expected)
    assert parts["total"] == parts["task"] == pytest.approx(float(expected))
    assert parts["compression"] == parts["kl"] == parts["relevance"] == 0.0


def test_zero_beta_total_is_the_task_loss():
    out, batch = fake_output(), label_batch()
    total, parts = dib_loss(out, batch, DIBConfig(beta=0.0, loss="mse"))
    assert torch.equal(total, F.mse_loss(out["pred"], batch["label"]))
    assert parts["C_text"] > 0  # computed, but weighted by 0


def test_single_sample_batch_falls_back_to_the_task_loss():
    out, batch = fake_output(n=1), label_batch(n=1)
    total, parts = dib_loss(out, batch, DIBConfig(beta=1.0))
    assert torch.equal(total, F.l1_loss(out["pred"], batch["label"]))


# --- agreement with direct and independent computations ----------------------------------------


@pytest.mark.parametrize("rank", [10, None])
def test_renyi_compression_equals_the_entropy_of_each_latent(rank):
    out, batch = fake_output(), label_batch()
    cfg = DIBConfig(beta=0.01, rank=rank, alpha=1.9)
    total, parts = dib_loss(out, batch, cfg, beta_scale=0.5)
    latents = {**out["z"], "fused": out["z_fused"]}
    entropies = {}
    for m, z in latents.items():
        direct = renyi_entropy(gaussian_gram(z, knn_sigma(z, 5)), 1.9, rank, "exact")
        oracle = np_entropy(np_gram(z.numpy(), np_knn_sigma(z.numpy(), 5)), 1.9, rank)
        assert parts[f"C_{m}"] == pytest.approx(float(direct), abs=1e-9)
        assert parts[f"C_{m}"] == pytest.approx(oracle, abs=1e-8)
        entropies[m] = oracle
    assert parts["compression"] == pytest.approx(0.5 * 0.01 * sum(entropies.values()))
    task = float(F.l1_loss(out["pred"], batch["label"]))
    assert float(total) == pytest.approx(task + parts["compression"])


def test_mutual_information_compression_uses_the_fixed_input_kernels():
    out, batch = fake_output(), label_batch()
    cfg = DIBConfig(compression="I", rank=None, sigma_vision=65.0, sigma_fused=3.0)
    _, parts = dib_loss(out, batch, cfg)
    pairs = {m: (out["z"][m], out["h"][m]) for m in MODS}
    pairs["fused"] = (out["z_fused"], out["fused"])
    for m, (z, x) in pairs.items():
        k_x = gaussian_gram(x, cfg.sigma_x(m))
        direct = mutual_information(k_x, gaussian_gram(z, knn_sigma(z, 5)), 1.9, None, "exact")
        assert parts[f"C_{m}"] == pytest.approx(float(direct), abs=1e-9)
    # a very wide input kernel sees one point: I(X;Z) -> 0 (vision, sigma 65 on unit-scale data)
    assert abs(parts["C_vision"]) < 0.05 < parts["C_text"]


def test_gaussian_kl_matches_the_closed_form():
    mu = torch.tensor([[1.0, 0.0], [0.5, -2.0]], dtype=torch.float64)
    sigma = torch.tensor([[2.0, 0.5], [1.0, 0.1]], dtype=torch.float64)

    def kl(m: float, s: float) -> float:
        return 0.5 * (m * m + s * s - 1 - math.log(s * s))

    rows = zip(mu.tolist(), sigma.tolist(), strict=True)
    expected = np.mean([sum(kl(m, s) for m, s in zip(mr, sr, strict=True)) for mr, sr in rows])
    assert float(gaussian_kl(mu, sigma)) == pytest.approx(expected, rel=1e-12)
    assert float(gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4))) == 0.0


def test_vib_adds_the_weighted_kl_of_all_four_latents():
    out, batch = fake_output(), label_batch()
    cfg = DIBConfig(ib="vib", vib_beta=1e-2)
    total, parts = dib_loss(out, batch, cfg)
    kls = [gaussian_kl(out["mu"][m], out["sigma"][m]) for m in MODS]
    kls.append(gaussian_kl(out["mu_fused"], out["sigma_fused"]))
    assert parts["kl"] == pytest.approx(1e-2 * float(sum(kls)))
    assert parts["compression"] == 0.0
    assert float(total) == pytest.approx(parts["task"] + parts["kl"])


def test_task_relevance_trains_the_per_modality_heads():
    out, batch = fake_output(heads=True), label_batch()
    cfg = DIBConfig(ib="none", per_modality_heads=True, head_weight=0.5)
    total, parts = dib_loss(out, batch, cfg)
    heads = sum(float(F.l1_loss(out["pred_m"][m], batch["label"])) for m in MODS)
    assert parts["relevance"] == pytest.approx(0.5 * heads)
    assert float(total) == pytest.approx(parts["task"] + 0.5 * heads)


def test_mi_relevance_rewards_label_information():
    out, batch = fake_output(), label_batch()
    y = batch["label"]
    out["z"]["text"] = torch.stack([y, 0.1 * y], 1)  # text latent carries the label
    cfg = DIBConfig(relevance="mi", gamma=0.1, rank=None)
    _, parts = dib_loss(out, batch, cfg)
    assert parts["relevance"] == pytest.approx(-0.1 * sum(parts[f"I_zy_{m}"] for m in MODS))
    # the estimator is biased upwards for independent noise (about 0.9 bits here), so compare
    assert parts["I_zy_text"] > max(parts["I_zy_audio"], parts["I_zy_vision"]) + 0.4


def test_beta_schedule():
    cfg = DIBConfig(beta_schedule="linear_warmup", warmup_epochs=4)
    assert [beta_scale(cfg, e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert beta_scale(DIBConfig(), 0) == 1.0


# --- stability and the modality report ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"rank": None},
        {"solver": "lanczos"},
        {"compression": "I", "relevance": "mi"},
        {"ib": "vib"},
    ],
    ids=["lowrank", "exact", "lanczos", "I+mi", "vib"],
)
def test_gradients_are_finite_on_duplicated_samples(overrides):
    torch.manual_seed(0)
    cfg = DIBConfig(beta=1.0, **TINY, **overrides)
    model = DIBModel(cfg, DIMS).train()
    g = torch.Generator().manual_seed(0)
    half = {m: torch.randn(4, 5, d, generator=g) for m, d in DIMS.items()} | {
        "label": torch.tensor([0.5, -1.0, 2.0, 0.5])
    }
    batch = {k: torch.cat([v, v, v]) for k, v in half.items()}  # every sample three times
    loss, parts = dib_loss(model(batch, generator=g), batch, cfg)
    loss.backward()
    assert math.isfinite(parts["total"])
    bad = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    assert not bad


def test_modality_mi_ranks_a_planted_informative_latent_first():
    g = torch.Generator().manual_seed(0)
    n = 300
    y = torch.empty(n, dtype=torch.float64).uniform_(-3, 3, generator=g)
    z = {
        "informative": torch.stack([y, y], 1) + 0.1 * torch.randn(n, 2, generator=g, dtype=y.dtype),
        "weak": torch.stack([y, 3 * torch.randn(n, generator=g, dtype=y.dtype)], 1),
        "noise": torch.randn(n, 8, generator=g, dtype=y.dtype),
    }
    mi = modality_mi(z, y, DIBConfig())
    assert mi["informative"] > mi["weak"] > mi["noise"]
    assert mi["informative"] > mi["noise"] + 0.5  # independent noise still scores ~0.7 bits


def test_modality_mi_uses_the_class_kernel_for_integer_labels():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (150,), generator=g)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = {"clustered": centres[y] + torch.randn(150, 2, generator=g), "noise": torch.randn(150, 2)}
    mi = modality_mi(z, y, DIBConfig())
    assert mi["clustered"] == pytest.approx(math.log2(3), abs=0.1)  # = H(Y) for 3 balanced classes
    assert mi["clustered"] > mi["noise"] + 0.5
