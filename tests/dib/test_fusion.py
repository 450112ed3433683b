"""DIB fusion invariants: identity at initialisation, no cross-modal path without bottlenecks."""

from __future__ import annotations

import math

import pytest
import torch

from clinfuse.core.errors import UnknownNameError
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.fusion import (
    FUSIONS,
    POOLINGS,
    ConcatFusion,
    Dropouts,
    LateFusion,
    LatentBottleneckFusion,
    MBTFusion,
)

MODS = ("text", "audio", "vision")
NO_DROPOUT = Dropouts(0.0, 0.0, 0.0, 0.0)


def _vectors(batch: int = 5, dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, dim, generator=g) for m in MODS}


def _sequences(batch: int = 3, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    steps = {"text": 6, "audio": 9, "vision": 4}
    tokens = {m: torch.randn(batch, t, dim, generator=g) for m, t in steps.items()}
    lengths = {m: torch.tensor([t, max(1, t - 2), 1][:batch]) for m, t in steps.items()}
    return tokens, lengths


def _perturbed(x: dict[str, torch.Tensor], *names: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return {
        m: v + 3.0 * torch.randn(v.shape, generator=g) if m in names else v for m, v in x.items()
    }


# --- LatentBottleneckFusion --------------------------------------------------------------------


def test_latent_fusion_is_identity_on_text_at_initialisation():
    z = _vectors()
    fuse = LatentBottleneckFusion(8)
    assert torch.equal(fuse.gates.detach(), torch.zeros(3))
    assert torch.equal(fuse(z), z["text"])
    assert torch.equal(fuse(_perturbed(z, "audio", "vision")), z["text"])


def test_latent_fusion_with_open_gates_lets_audio_through():
    z = _vectors()
    fuse = LatentBottleneckFusion(8, n_latents=4, iters=3, init_std=1.0)
    with torch.no_grad():
        fuse.gates.fill_(0.7)
    out = fuse(z)
    assert not torch.allclose(out, z["text"])
    changed = fuse(_perturbed(z, "audio"))
    assert (changed - out).abs().max() > 1e-4


def test_latent_fusion_without_latents_has_no_cross_modal_path():
    z = _vectors()
    fuse = LatentBottleneckFusion(8, n_latents=0)
    with torch.no_grad():
        fuse.gates.fill_(0.9)
    out = fuse(z)
    assert torch.equal(out, z["text"])
    assert torch.equal(fuse(_perturbed(z, "audio", "vision")), out)


def _latent_reference(fuse: LatentBottleneckFusion, z: dict[str, torch.Tensor]) -> torch.Tensor:
    """The update of :class:`LatentBottleneckFusion` (its docstring), written sample by sample
    and modality by modality, with explicit sums."""
    d = fuse.dim
    lam = fuse.latents.detach().double()
    gates = fuse.gates.detach().double()
    outs = []
    for b in range(z["text"].shape[0]):
        streams = [z[m][b].double() for m in fuse.modalities]
        for _ in range(fuse.iters):
            x = torch.stack(streams)  # (M, d)
            read = []
            for k in range(lam.shape[0]):
                w = torch.softmax(torch.tensor([lam[k] @ x[j] / math.sqrt(d) for j in range(3)]), 0)
                read.append(sum(w[j] * x[j] for j in range(3)))
            read = torch.stack(read)  # (K, d)
            new = []
            for i, s in enumerate(streams):
                w = torch.softmax(read @ s / math.sqrt(d), 0)
                new.append(s + gates[i] * (w @ read))
            streams = new
        outs.append(streams[0])
    return torch.stack(outs)


def test_latent_fusion_matches_a_loop_reference():
    z = _vectors(batch=3)
    fuse = LatentBottleneckFusion(8, n_latents=4, iters=3, init_std=0.5)
    with torch.no_grad():
        fuse.gates.copy_(torch.tensor([0.3, -0.5, 0.8]))
    got = fuse(z).double()
    assert torch.allclose(got, _latent_reference(fuse, z), atol=1e-5)


def test_latent_fusion_mean_anchor_averages_streams():
    z = _vectors()
    fuse = LatentBottleneckFusion(8, anchor="mean")
    expected = torch.stack([z[m] for m in MODS], 1).mean(1)
    assert torch.allclose(fuse(z), expected)


# --- MBTFusion ---------------------------------------------------------------------------------


def _mbt(n_bottlenecks: int, n_layers: int = 2, fusion_layer: int = 0) -> MBTFusion:
    torch.manual_seed(0)
    return MBTFusion(8, n_bottlenecks, n_layers, fusion_layer, heads=2, dropouts=NO_DROPOUT).eval()


def test_mbt_without_bottlenecks_has_no_cross_modal_path():
    tokens, lengths = _sequences()
    fuse = _mbt(n_bottlenecks=0)
    z = {m: t[:, 0] for m, t in tokens.items()}
    out = fuse(z, tokens, lengths)
    assert out.shape == (3, 8)
    assert torch.equal(fuse(z, _perturbed(tokens, "audio", "vision"), lengths), out)


def test_mbt_with_bottlenecks_lets_audio_through():
    tokens, lengths = _sequences()
    fuse = _mbt(n_bottlenecks=4)
    z = {m: t[:, 0] for m, t in tokens.items()}
    out = fuse(z, tokens, lengths)
    assert (fuse(z, _perturbed(tokens, "audio"), lengths) - out).abs().max() > 1e-4


@pytest.mark.parametrize("fusion_layer", [2, 3])
def test_mbt_needs_two_fusion_layers_to_exchange(fusion_layer):
    # fusion_layer 3 of 3: no fusion layer; 2 of 3: one, whose writes nobody reads
    tokens, lengths = _sequences()
    fuse = _mbt(n_bottlenecks=4, n_layers=3, fusion_layer=fusion_layer)
    z = {m: t[:, 0] for m, t in tokens.items()}
    out = fuse(z, tokens, lengths)
    assert torch.equal(fuse(z, _perturbed(tokens, "audio", "vision"), lengths), out)
    fuse = _mbt(n_bottlenecks=4, n_layers=3, fusion_layer=1)  # two fusion layers: audio crosses
    out = fuse(z, tokens, lengths)
    assert (fuse(z, _perturbed(tokens, "audio"), lengths) - out).abs().max() > 1e-4


def test_mbt_ignores_padded_frames():
    tokens, lengths = _sequences()
    fuse = _mbt(n_bottlenecks=4)
    z = {m: t[:, 0] for m, t in tokens.items()}
    out = fuse(z, tokens, lengths)
    noisy = {}
    for m, t in tokens.items():
        pad = torch.arange(t.shape[1])[None, :, None] >= lengths[m][:, None, None]
        noisy[m] = torch.where(pad, t + 100.0, t)
    assert torch.allclose(fuse(z, noisy, lengths), out, atol=1e-5)


# --- concat, registry, pooling -----------------------------------------------------------------


def test_concat_fusion_is_a_linear_map_of_the_concatenation():
    z = _vectors()
    fuse = ConcatFusion(8)
    cat = torch.cat([z[m] for m in MODS], -1)
    assert torch.allclose(fuse(z), cat @ fuse.proj.weight.T + fuse.proj.bias)


@pytest.mark.parametrize("name", ["latent", "mbt", "concat"])
def test_every_registered_fusion_builds_from_config(name):
    cfg = DIBConfig(fusion=name, hidden=10, n_heads=2)
    fuse = FUSIONS.get(name).from_config(cfg).eval()
    z = _vectors(dim=10)
    assert fuse(z).shape == (5, 10)


def test_late_fusion_averages_the_latents_and_is_flagged_additive():
    z = {m: torch.randn(3, 4) for m in MODS}
    fuse = LateFusion(MODS)
    assert LateFusion.additive and not ConcatFusion.additive
    assert torch.allclose(fuse(z), (z["text"] + z["audio"] + z["vision"]) / 3)
    assert list(fuse.parameters()) == []  # the per-modality heads live in the model


def test_registry_is_covered_by_the_tests_and_rejects_unknown_names():
    assert FUSIONS.names() == ["concat", "late", "latent", "mbt"]  # a new fusion needs tests here
    with pytest.raises(UnknownNameError, match="latent"):
        FUSIONS.get("latnet")


def test_poolings_pick_the_right_frames():
    seq = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    lengths = torch.tensor([2, 4])
    assert torch.equal(POOLINGS["last_valid"](seq, lengths), torch.stack([seq[0, 1], seq[1, 3]]))
    assert torch.equal(POOLINGS["last"](seq, lengths), seq[:, -1])
    assert torch.equal(POOLINGS["cls"](seq, lengths), seq[:, 0])
    mean = torch.stack([seq[0, :2].mean(0), seq[1].mean(0)])
    assert torch.allclose(POOLINGS["mean"](seq, lengths), mean)
