"""DIB network, config and presets: shapes, determinism, training signal, input checks."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import torch

from clinfuse.core.config import build_config, field_docs, read_toml
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.losses import dib_loss
from clinfuse.methods.dib.model import (
    BertTextEncoder,
    DIBModel,
    FeatureEncoder,
    StochasticEncoder,
)

PRESETS = Path(__file__).resolve().parents[2] / "configs" / "dib"
DIMS = {"text": 7, "audio": 3, "vision": 4}
TINY = {"hidden": 8, "n_heads": 2, "n_layers": 1, "ib_hidden": 16, "mbt_layers": 2, "batch_size": 8}


def make_batch(n: int = 8, seed: int = 0, dims: dict[str, int] = DIMS) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    steps = {"text": 6, "audio": 9, "vision": 5}
    batch: dict[str, torch.Tensor] = {}
    for m, t in steps.items():
        batch[m] = torch.randn(n, t, dims[m], generator=g)
        batch[f"{m}_lengths"] = torch.randint(1, t + 1, (n,), generator=g)
    batch["label"] = torch.empty(n).uniform_(-3, 3, generator=g)
    return batch


# --- shapes and modes --------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["latent", "mbt", "concat"])
def test_output_shapes(fusion):
    cfg = DIBConfig(fusion=fusion, per_modality_heads=True, **TINY)
    out = DIBModel(cfg, DIMS)(make_batch())
    assert out["pred"].shape == (8,)
    for key in ("h", "z", "mu", "sigma"):
        assert set(out[key]) == {"text", "audio", "vision"}
        assert all(v.shape == (8, 8) for v in out[key].values())
    for key in ("fused", "z_fused", "mu_fused", "sigma_fused"):
        assert out[key].shape == (8, 8)
    assert {m: v.shape for m, v in out["pred_m"].items()} == dict.fromkeys(DIMS, (8,))


@pytest.mark.parametrize("fusion", ["latent", "mbt"])
def test_eval_is_deterministic_and_uses_the_mean(fusion):
    torch.manual_seed(0)
    model = DIBModel(DIBConfig(fusion=fusion, **TINY), DIMS).eval()
    batch = make_batch()
    a, b = model(batch), model(batch)
    assert torch.equal(a["pred"], b["pred"])
    assert all(torch.equal(a["z"][m], a["mu"][m]) for m in DIMS)
    assert torch.equal(a["z_fused"], a["mu_fused"])


def test_training_mode_samples_with_the_given_generator():
    torch.manual_seed(0)
    no_dropout = dict.fromkeys(("dropout", "attn_dropout", "relu_dropout", "res_dropout"), 0.0)
    model = DIBModel(DIBConfig(**no_dropout, embed_dropout=0.0, **TINY), DIMS).train()
    batch = make_batch()
    a = model(batch, generator=torch.Generator().manual_seed(1))
    b = model(batch, generator=torch.Generator().manual_seed(1))
    c = model(batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a["z"]["audio"], b["z"]["audio"])
    assert not torch.equal(a["z"]["audio"], c["z"]["audio"])
    noise = a["z"]["audio"] - a["mu"]["audio"]
    assert 0 < noise.abs().max() < 10 * a["sigma"]["audio"].max()


def test_no_ib_is_deterministic_without_a_sigma_branch():
    model = DIBModel(DIBConfig(ib="none", **TINY), DIMS).train()
    out = model(make_batch())
    assert all(torch.equal(out["z"][m], out["mu"][m]) for m in DIMS)
    assert all(not out["sigma"][m].any() for m in DIMS)
    assert not [n for n, _ in model.named_parameters() if ".sigma." in n]


def test_stochastic_encoder_scale_starts_near_softplus_of_minus_offset():
    enc = StochasticEncoder(4, 8, 4, sigma_offset=5.0)
    with torch.no_grad():
        enc.sigma.weight.zero_()
        enc.sigma.bias.zero_()
    _, _, sigma = enc(torch.randn(3, 4))
    assert torch.allclose(
        sigma, torch.full((3, 4), torch.nn.functional.softplus(torch.tensor(-5.0)))
    )


# --- training signal (TRL style) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"fusion": "mbt"},
        {"fusion": "concat"},
        {"ib": "vib", "per_modality_heads": True},
        {"ib": "none"},
        {"compression": "I", "relevance": "mi"},
    ],
    ids=["quick", "mbt", "concat", "vib+heads", "no_ib", "I+mi"],
)
def test_every_parameter_changes_during_training(overrides):
    values = read_toml(PRESETS / "quick.toml", "dib")
    cfg = build_config(DIBConfig, {**values, **overrides, "seed": 0})
    torch.manual_seed(0)
    model = DIBModel(cfg, DIMS).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.param_groups())
    batch = make_batch(16)
    # three steps: the fusion gates start at 0, so the latents and the audio/vision gates only get
    # a gradient once the text gate has moved (step 2)
    for _ in range(3):
        loss, _ = dib_loss(model(batch, generator=torch.Generator().manual_seed(0)), batch, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    frozen = [
        n for n, p in model.named_parameters() if p.numel() and torch.equal(p.detach(), before[n])
    ]
    assert not frozen, f"parameters that never changed: {frozen}"


def test_param_groups_cover_every_parameter_once():
    model = DIBModel(DIBConfig(**TINY), DIMS)
    groups = model.param_groups()
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert groups[0]["lr"] == DIBConfig().lr


# --- input checks ------------------------------------------------------------------------------


def test_wrong_feature_dim_names_the_modality_and_the_fix():
    model = DIBModel(DIBConfig(**TINY), DIMS)
    batch = make_batch(dims={**DIMS, "audio": 5})
    with pytest.raises(DataError, match="audio") as err:
        model(batch)
    assert err.value.fix is not None and "audio_dim=5" in err.value.fix
    assert "3" in str(err.value.expected) and "5" in str(err.value.found)


def test_config_dim_disagreeing_with_the_data_raises():
    with pytest.raises(DataError, match="vision") as err:
        DIBModel(DIBConfig(vision_dim=47, **TINY), DIMS)
    assert err.value.fix is not None and "vision_dim=4" in err.value.fix


def test_missing_modality_in_the_batch_raises():
    batch = make_batch()
    del batch["vision"]
    with pytest.raises(DataError, match="vision"):
        DIBModel(DIBConfig(**TINY), DIMS)(batch)


def test_text_only_model_ignores_other_modalities():
    cfg = DIBConfig(modalities=("text",), **TINY)
    model = DIBModel(cfg, {"text": 7}).eval()
    batch = make_batch()
    out = model(batch)
    batch["audio"] = batch["audio"] * 100
    assert torch.equal(model(batch)["pred"], out["pred"])
    assert set(out["z"]) == {"text"}


# --- encoders ----------------------------------------------------------------------------------


def test_last_valid_pooling_picks_the_last_valid_frame():
    enc = FeatureEncoder(3, 8, kernel=3, n_heads=2, n_layers=1, pooling="last_valid").eval()
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([2, 5])
    out = enc(x, lengths)
    assert torch.equal(out.pooled, torch.stack([out.tokens[0, 1], out.tokens[1, 4]]))
    literal_last = FeatureEncoder(3, 8, n_heads=2, n_layers=1, pooling="last").eval()
    literal_last.load_state_dict(enc.state_dict())
    assert torch.equal(literal_last(x, lengths).pooled, out.tokens[:, -1])


def test_padded_frames_cannot_reach_the_pooled_output():
    enc = FeatureEncoder(3, 8, kernel=3, n_heads=2, n_layers=2, pooling="last_valid").eval()
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([3, 6])
    garbage = x.clone()
    garbage[0, 3:] = 1e3
    assert torch.allclose(enc(garbage, lengths).pooled, enc(x, lengths).pooled, atol=1e-5)


def test_bert_encoder_reports_a_missing_model_directory(tmp_path):
    with pytest.raises(ConfigError, match="bert_path") as err:
        BertTextEncoder(tmp_path / "no-bert-here", 50)
    assert "does not exist" in str(err.value.found)


# --- config and presets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"text_encoder": "bert"}, "bert_path"),
        ({"rank": 0}, "rank"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"fusion": "mbt", "mbt_layers": 2, "mbt_fusion_layer": 3}, "mbt_fusion_layer"),
        ({"fusion": "mbt", "mbt_layers": 3, "mbt_fusion_layer": 2}, "one MBT fusion layer"),
        ({"hidden": 50, "n_heads": 4}, "divisible"),
        ({"batch_size": 1}, "at least 2 samples"),
        ({"attn_dropout": 1.0}, "attn_dropout"),
        ({"relevance": "mi", "ib": "vib"}, "relevance=mi"),
        ({"relevance": "mi", "per_modality_heads": True}, "heads"),
        ({"modalities": ("audio", "vision")}, "anchor=text"),
        ({"modalities": ("text", "smell")}, "modalities"),
        ({"rank": None, "solver": "lanczos"}, "solver"),
        ({"sigma_z": 0.0}, "sigma_z"),
    ],
)
def test_validate_rejects_inconsistent_configs(overrides, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        DIBConfig(**overrides).validate()
    assert err.value.fix


def test_defaults_are_valid_and_every_field_is_documented():
    DIBConfig().validate()
    docs = field_docs(DIBConfig)
    missing = [f.name for f in dataclasses.fields(DIBConfig) if not docs.get(f.name)]
    assert not missing


_SCALARS = {int, float, bool, str}


def _allowed(tp: object) -> bool:
    origin = get_origin(tp)
    if tp in _SCALARS or origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return len(args) == 1 and args[0] in (int, float, str)
    if origin is tuple:
        args = get_args(tp)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in (float, str)
    return False


def test_config_is_flat_with_cli_friendly_types():
    hints = typing.get_type_hints(DIBConfig)
    bad = {name: tp for name, tp in hints.items() if not _allowed(tp)}
    assert not bad


def test_presets_only_use_config_fields():
    fields = {f.name for f in dataclasses.fields(DIBConfig)}
    files = sorted(PRESETS.glob("*.toml"))
    assert {p.stem for p in files} >= {
        "quick",
        "paper",
        "no_ib",
        "vib",
        "concat",
        "exact_entropy",
        "mbt",
    }
    for path in files:
        keys = set(tomllib.loads(path.read_text()))
        assert keys - {"base"} <= fields, (path.name, keys - fields - {"base"})


@pytest.mark.parametrize(
    "name", ["quick", "paper", "no_ib", "vib", "concat", "exact_entropy", "mbt"]
)
def test_presets_build_valid_configs(name):
    cfg = build_config(DIBConfig, read_toml(PRESETS / f"{name}.toml", "dib"))
    expected = {
        "no_ib": ("ib", "none"),
        "vib": ("ib", "vib"),
        "concat": ("fusion", "concat"),
        "exact_entropy": ("rank", None),
        "mbt": ("fusion", "mbt"),
        "paper": ("beta", 1e-5),
    }
    if name in expected:
        key, value = expected[name]
        assert getattr(cfg, key) == value
    if name not in ("quick", "paper"):  # ablations are small deltas on quick
        quick = build_config(DIBConfig, read_toml(PRESETS / "quick.toml", "dib"))
        delta = {
            f.name
            for f in dataclasses.fields(DIBConfig)
            if getattr(cfg, f.name) != getattr(quick, f.name)
        }
        assert 1 <= len(delta) <= 3, delta
