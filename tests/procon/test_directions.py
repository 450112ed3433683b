"""Residual capture, difference-in-means directions, AUROC and DirectionSet (tiny random Llama)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.procon.tiny import tiny_llama, token_batch
from torch import nn

from clinfuse.core.errors import DataError
from clinfuse.methods.procon.directions import (
    DirectionSet,
    auroc,
    capture,
    capture_residual,
    compute_directions,
    decoder_layers,
    diff_in_means,
    final_norm,
    last_token_positions,
    model_fingerprint,
    projections,
)

LENGTHS = [5, 9, 7, 3]


def _n_hooks(model) -> int:
    """Hooks on the decoder layers and final norm (transformers adds a few of its own)."""
    mods = [*decoder_layers(model), final_norm(model)]
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in mods)


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_capture_equals_output_hidden_states(model, padding):
    ids, mask = token_batch(1, LENGTHS, padding=padding)
    n = len(decoder_layers(model))
    last = torch.tensor([8] * 4) if padding == "left" else torch.tensor(LENGTHS) - 1
    assert torch.equal(last_token_positions(mask), last)
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(hs) == n + 1
    hooks0 = _n_hooks(model)  # transformers installs its own recorders on the first such call
    acts = capture(model, ids, mask, layers=range(n + 1))  # n: final-norm output
    rows = torch.arange(4)
    for layer in range(n + 1):
        torch.testing.assert_close(acts[layer], hs[layer][rows, last], rtol=0, atol=1e-6)
    # (B, k) positions: the last three tokens of every row, e.g. a post-instruction template
    pos = last_token_positions(mask, offsets=[-2, -1, 0])
    acts3 = capture(model, ids, mask, layers=[1], positions=pos)
    torch.testing.assert_close(acts3[1], hs[1][rows[:, None], pos], rtol=0, atol=1e-6)
    # final="residual" is the last layer's output, before the final norm
    raw = capture(model, ids, mask, layers=[n], final="residual")[n]
    torch.testing.assert_close(model.model.norm(raw), acts[n], rtol=0, atol=1e-6)
    assert not torch.allclose(raw, acts[n], atol=1e-3)
    assert _n_hooks(model) == hooks0


def test_hooks_removed_after_exception(model):
    ids, mask = token_batch(2, LENGTHS)
    n, hooks0 = len(decoder_layers(model)), _n_hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_residual(model, range(n + 1)) as store:
            assert _n_hooks(model) == hooks0 + n + 1
            model(input_ids=ids, attention_mask=mask)
            assert set(store) == set(range(n + 1)) and store[0].shape == (4, 9, 64)
            raise RuntimeError("boom")
    assert _n_hooks(model) == hooks0
    with pytest.raises(IndexError):  # token id outside the vocabulary, raised inside forward
        capture(model, ids + 10_000, mask, layers=range(n + 1))
    assert _n_hooks(model) == hooks0
    with pytest.raises(DataError, match="outside the model"):
        capture(model, ids, mask, layers=[0, n + 1])
    assert _n_hooks(model) == hooks0


def test_planted_direction_recovered_at_its_layers():
    model = tiny_llama(3, layers=4)
    u = torch.randn(64, generator=torch.Generator().manual_seed(7))
    u = u / u.norm()
    a, planted_after = 2.0, 1  # add a*u to the output of decoder layer 1 for harmful inputs

    def plant(_m, _a, out):
        return out + a * u

    def acts_of(seed, harmful):
        ids, mask = token_batch(seed, [6, 8, 5, 7] * 6)
        handle = None
        if harmful:
            handle = decoder_layers(model)[planted_after].register_forward_hook(plant)
        try:
            return ids, mask, capture(model, ids, mask, layers=range(5), final="residual")
        finally:
            if handle is not None:
                handle.remove()

    *_, h_harm = acts_of(10, True)
    *_, h_safe = acts_of(11, False)
    cos = {}
    for layer in range(5):
        r, norm, mu, nu = diff_in_means(h_harm[layer], h_safe[layer])
        assert r.dtype == torch.float64 and abs(float(r.norm()) - 1) < 1e-12
        torch.testing.assert_close(r * norm, mu - nu)
        cos[layer] = float(r @ u.double())
        if layer in (2, 3):  # the residual entering layers 2 and 3 carries the plant
            assert cos[layer] > 0.99, cos
            assert abs(float(norm) - a) < 0.1 * a
        elif layer == 4:  # after the last layer's update (measured 0.985)
            assert cos[layer] > 0.95, cos
        else:
            assert abs(cos[layer]) < 0.5, cos
    # held-out prompts: projections onto r_2 separate harmful from harmless perfectly
    *_, t_harm = acts_of(20, True)
    *_, t_safe = acts_of(21, False)
    r2 = diff_in_means(h_harm[2], h_safe[2])[0]
    assert auroc(projections(t_harm[2], r2), projections(t_safe[2], r2)) == 1.0
    assert projections(t_harm[2], r2).dtype == torch.float64


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for n_p, n_q in [(1, 1), (5, 3), (40, 60), (100, 7)]:
        p = rng.integers(0, 4, n_p).astype(float) + 0.5  # few distinct values: many ties
        q = rng.integers(0, 4, n_q).astype(float)
        q[: n_q // 2] += 0.5
        want = roc_auc_score(np.r_[np.ones(n_p), np.zeros(n_q)], np.r_[p, q])
        assert auroc(torch.tensor(p), torch.tensor(q)) == pytest.approx(want, abs=1e-12)
    assert auroc(np.ones(3), np.ones(4)) == 0.5
    assert auroc(np.array([2.0]), np.array([1.0])) == 1.0
    with pytest.raises(DataError):
        auroc(np.array([]), np.array([1.0]))


def test_direction_set_round_trip_and_mismatch_errors(model, tmp_path):
    harm = token_batch(4, [6, 4, 8, 5, 7, 3], padding="right")
    safe = token_batch(5, [5, 5, 6, 9], padding="left")
    ds = compute_directions(model, harm, safe, batch_size=4)
    assert ds.layers == (0, 1, 2) and ds.n_layers == 3 and ds.hidden_size == 64
    # the batched float64 means equal one direct capture of all rows
    direct = capture(model, *harm, layers=[2])[2].double().mean(0)
    torch.testing.assert_close(ds.mean_harmful[2], direct, rtol=0, atol=1e-6)
    torch.testing.assert_close(ds.directions.norm(dim=1), torch.ones(3, dtype=torch.float64))
    path = ds.save(tmp_path / "r.pt")
    back = DirectionSet.load(path, model)
    assert back.layers == ds.layers and back.fingerprint == ds.fingerprint == model_fingerprint(
        model
    )
    for key in ("directions", "norms", "mean_harmful", "mean_harmless"):
        assert torch.equal(getattr(back, key), getattr(ds, key))
    assert all(c == pytest.approx(1.0) for c in back.cosine(ds).values())
    torch.testing.assert_close(back.project({1: direct[None]})[1], direct[None] @ ds[1])

    with pytest.raises(DataError, match="hidden size"):
        DirectionSet.load(path, tiny_llama(0, hidden=32))
    with pytest.raises(DataError, match="number of layers"):
        DirectionSet.load(path, tiny_llama(0, layers=4))
    other = tiny_llama(1)
    with pytest.raises(DataError, match="fingerprint"):
        DirectionSet.load(path, other)
    assert DirectionSet.load(path, other, check_fingerprint=False).layers == ds.layers
    raw = torch.load(path, weights_only=True)
    raw["layers"] = [0, 1, 7]
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="outside the model"):
        DirectionSet.load(tmp_path / "bad.pt")
    with pytest.raises(DataError, match="no direction for this layer"):
        ds[5]
    torch.save({"layers": [0]}, tmp_path / "junk.pt")
    with pytest.raises(DataError, match="not a DirectionSet"):
        DirectionSet.load(tmp_path / "junk.pt")


def test_peft_lora_resolves_to_same_layers_and_captures():
    peft = pytest.importorskip("peft")
    base = tiny_llama(0)
    wrapped_base = tiny_llama(0)
    lora = peft.get_peft_model(
        wrapped_base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    ).eval()
    assert all(a is b for a, b in zip(decoder_layers(lora), wrapped_base.model.layers, strict=True))
    assert final_norm(lora) is wrapped_base.model.norm
    assert model_fingerprint(lora) == model_fingerprint(base)
    ids, mask = token_batch(6, LENGTHS, padding="right")
    got, want = capture(lora, ids, mask, range(4)), capture(base, ids, mask, range(4))
    for layer in range(4):  # LoRA B starts at zero: identical states
        torch.testing.assert_close(got[layer], want[layer], rtol=0, atol=1e-6)

    noisy = peft.get_peft_model(
        tiny_llama(0), peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    ).eval()
    with torch.no_grad():
        hs = noisy(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    got = capture(noisy, ids, mask, range(4))
    last = torch.tensor(LENGTHS) - 1
    for layer in range(4):
        torch.testing.assert_close(got[layer], hs[layer][torch.arange(4), last], rtol=0, atol=1e-6)
    assert not torch.allclose(got[2], want[2], atol=1e-4)  # the adapter is live in the hooks


def test_vision_language_model_resolves_to_language_layers():
    tr = pytest.importorskip("transformers")
    text = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 300,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    }
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2}
    vision["out_hidden_size"] = 64
    cfg = tr.Qwen2_5_VLConfig(text_config=text, vision_config=vision)
    vl = tr.Qwen2_5_VLForConditionalGeneration(cfg)
    assert decoder_layers(vl) is vl.model.language_model.layers
    assert final_norm(vl) is vl.model.language_model.norm
    assert model_fingerprint(vl).startswith("Qwen2_5_VLForConditionalGeneration|d=64|L=2|")


def test_errors_for_unknown_layouts_and_bad_positions():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2)])

    with pytest.raises(DataError, match="blocks"):
        decoder_layers(Odd())
    with pytest.raises(DataError, match="no non-pad token"):
        last_token_positions(torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(DataError, match="pad tokens"):
        last_token_positions(torch.tensor([[0, 1, 1], [1, 1, 1]]), offsets=[-2, 0])
    model = tiny_llama(0, layers=2)
    ids, mask = token_batch(0, [3, 4])
    with pytest.raises(DataError, match="positions outside"):
        capture(model, ids, mask, positions=torch.tensor([0, 4]))
