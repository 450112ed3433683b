"""ProConSFTTrainer: gradient-accumulation equivalence against a full-batch oracle; DriftCallback.

The data set is already tokenized (``input_ids`` + ``completion_mask``, ``completion_only_loss``),
so SFTTrainer's own preparation only turns the mask into ``labels``. The optimiser is plain SGD
(AdamW's first step, ~ lr * sign(g), would amplify float noise in near-zero gradients).
"""

from __future__ import annotations

import logging

import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.procon.loss import ProConConfig, procon_terms, warmup_weight

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import SFTConfig  # noqa: E402

from clinfuse.methods.procon.trainer import (  # noqa: E402
    DiffInMeansProbe,
    DriftCallback,
    ProConSFTTrainer,
    last_prompt_positions,
)

VOCAB, LR = 256, 0.05
logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls run faster single-threaded on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random 2-layer, d=64 Llama (eager attention), deterministic in ``seed``."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(cfg)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t1"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t2")


def tiny_dataset(n: int = 4, seed: int = 0):
    """Prompt/completion token sequences of different lengths (so padding differs by batch)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        p_len, c_len = 3 + i % 3, 2 + (i * 2) % 5
        ids = torch.randint(3, VOCAB, (p_len + c_len,), generator=g).tolist()
        rows.append({"input_ids": ids, "completion_mask": [0] * p_len + [1] * c_len})
    return datasets.Dataset.from_list(rows)


def unit_directions(d: int = 64, layers=(0, 1), seed: int = 1) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layer in layers:
        r = torch.randn(d, generator=g, dtype=torch.float64)
        out[layer] = r / r.norm()
    return out


def make_trainer(model, procon, batch, accum, tmp_path, steps=1, callbacks=None, **kw):
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        max_steps=steps,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        completion_only_loss=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        seed=0,
        dataloader_drop_last=False,
        disable_tqdm=True,
        activation_checkpointing=False,
        bf16=False,
    )
    return ProConSFTTrainer(
        model=model,
        args=args,
        train_dataset=tiny_dataset(),
        processing_class=tiny_tokenizer(),
        procon=procon,
        callbacks=callbacks,
        **kw,
    )


HINGE = ProConConfig(
    mode="hinge", lam=0.1, layers=(0, 1), warmup_steps=2, warmup_factor=3.0, margin=0.5
)
ANCHOR = ProConConfig(mode="anchor", lam=0.2, layers=(0, 1), warmup_steps=2, warmup_factor=3.0)
THRESH = {0: 2.0, 1: 3.0}


def train_once(procon, batch, accum, tmp_path, shift_anchors=0.0):
    model = tiny_llama()
    kw = {"thresholds": THRESH} if procon.mode == "hinge" else {}
    trainer = make_trainer(
        model, procon, batch, accum, tmp_path, directions=unit_directions(), **kw
    )
    # anchor mode is exactly zero at step 0; shifting the cached anchors makes the term active
    for key in trainer.anchor_cache:
        trainer.anchor_cache[key] = trainer.anchor_cache[key] + shift_anchors
    trainer.train()
    return {k: v.detach().clone() for k, v in model.named_parameters()}, trainer


def oracle_update(procon, shift_anchors=0.0):
    """One SGD step on the full batch of 4, written independently of the trainer:
    HF's own mean CE + lam w(0) mean_i terms from ``output_hidden_states``."""
    model = tiny_llama()
    data = tiny_dataset()
    width = max(len(r["input_ids"]) for r in data)
    ids = torch.zeros(len(data), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    last_prompt = []
    for i, row in enumerate(data):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        mask[i, :n] = 1
        cm = torch.tensor(row["completion_mask"])
        labels[i, :n] = torch.where(cm == 1, ids[i, :n], -100)
        last_prompt.append(int((cm == 0).sum()) - 1)
    pos = torch.tensor(last_prompt)
    r = unit_directions()
    with torch.no_grad():
        hs0 = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    rows = torch.arange(len(data))
    h = {layer: out.hidden_states[layer][rows, pos] for layer in procon.layers}
    if procon.mode == "hinge":
        anchors = {layer: torch.tensor(THRESH[layer]) for layer in procon.layers}
    else:
        anchors = {
            layer: hs0[layer][rows, pos].double() @ r[layer] + shift_anchors
            for layer in procon.layers
        }
    aux = procon_terms(h, r, anchors, procon).mean()
    loss = out.loss + procon.lam * warmup_weight(0, procon) * aux
    loss.backward()
    return {k: (p - LR * p.grad).detach() for k, p in model.named_parameters()}, aux.item()


@pytest.mark.parametrize(
    ("procon", "shift"), [(HINGE, 0.0), (ANCHOR, 1.5)], ids=["hinge", "anchor"]
)
def test_gradient_accumulation_equivalence_with_procon_active(procon, shift, tmp_path):
    expected, aux = oracle_update(procon, shift)
    assert aux > 0.1  # the constraint is active on this batch
    no_procon, _ = oracle_update(ProConConfig(mode="hinge", lam=0.0, layers=(0, 1)))
    moved = max((expected[k] - no_procon[k]).abs().max().item() for k in expected)
    assert moved > 1e-3  # the ProCon term changes the update visibly
    for batch, accum in [(2, 2), (1, 4), (4, 1)]:
        params, trainer = train_once(procon, batch, accum, tmp_path / f"{batch}x{accum}", shift)
        assert trainer.state.global_step == 1
        for name, value in params.items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-5, msg=name)
        assert "procon" in trainer.state.log_history[0]


def test_anchor_mode_caches_initial_projections_and_rejects_unknown_prompts(tmp_path):
    model = tiny_llama()
    trainer = make_trainer(model, ANCHOR, 2, 1, tmp_path, directions=unit_directions())
    assert len(trainer.anchor_cache) == 4
    # unshifted anchors: the constraint is exactly zero for the initial model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    pos = last_prompt_positions(batch)
    assert pos.tolist() == [2, 3, 4, 2]
    model.eval()
    ref = trainer._anchors(model, batch, pos)
    torch.testing.assert_close(ref, trainer._projections(model, batch), rtol=0, atol=0)
    trainer.anchor_cache.clear()
    with pytest.raises(DataError, match="anchors missing"):
        trainer._anchors(model, batch, pos)


def test_drift_callback_one_record_per_logging_step(tmp_path):
    g = torch.Generator().manual_seed(5)
    harmful = torch.randint(3, VOCAB, (6, 5), generator=g)
    harmless = torch.randint(3, VOCAB, (6, 4), generator=g)
    probe = DiffInMeansProbe(
        harmful, torch.ones_like(harmful), harmless, torch.ones_like(harmless), layers=(0, 1)
    )
    model = tiny_llama()
    r0 = probe(model)
    cb = DriftCallback(r0, probe, every=1, projections=probe.projections)
    assert cb.measure(model, 0)["drift_cos/L1"] == pytest.approx(1.0, abs=1e-12)
    trainer = make_trainer(
        model,
        HINGE,
        2,
        1,
        tmp_path,
        steps=3,
        callbacks=[cb],
        directions=unit_directions(),
        thresholds=THRESH,
    )
    trainer.args.learning_rate = 0.5
    trainer.train()
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [rec["step"] for rec in cb.history] == [1.0, 2.0, 3.0] == [e["step"] for e in train_logs]
    cosines = [rec[f"drift_cos/L{layer}"] for rec in cb.history for layer in (0, 1)]
    assert all(-1.0 <= c <= 1.0 for c in cosines)
    assert min(cosines) < 1.0 - 1e-9  # training moved the direction
    for entry in train_logs:
        assert {"drift_cos/L0", "drift_cos/L1", "proj_mean/L1", "proj_std/L1"} <= set(entry)
        assert entry["proj_std/L1"] >= 0.0


def test_disable_adapter_anchors_are_the_frozen_base_model(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_llama()
    procon = ProConConfig(lam=0.5, layers=(0, 1), anchor_source="disable_adapter")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
    trainer = make_trainer(
        model, procon, 2, 1, tmp_path, steps=2, directions=unit_directions(), peft_config=lora
    )
    assert trainer.anchor_cache == {}  # nothing cached: anchors come from the base model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    pos = last_prompt_positions(batch)
    base = trainer._anchors(trainer.model, batch, pos)
    trainer.args.learning_rate = 0.5
    trainer.train()
    # LoRA starts as the identity, so the constraint is exactly zero on the first step only
    assert trainer.state.log_history[0]["procon"] == 0.0
    assert trainer.state.log_history[1]["procon"] > 0.0
    torch.testing.assert_close(trainer._anchors(trainer.model, batch, pos), base, rtol=0, atol=0)
    assert not torch.equal(trainer._projections(trainer.model, batch), base)


def test_position_offset_constrains_the_token_before_the_last_prompt_token(tmp_path):
    """position=-1: projections are those of output_hidden_states one token earlier."""
    model = tiny_llama()
    r = unit_directions()
    trainer = make_trainer(model, ANCHOR, 4, 1, tmp_path, directions=r, position=-1)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert trainer._positions(batch).tolist() == [1, 2, 3, 1]
    model.eval()
    got = trainer._projections(model, batch)
    with torch.no_grad():
        hs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   output_hidden_states=True).hidden_states  # fmt: skip
    rows, pos = torch.arange(4), torch.tensor([1, 2, 3, 1])
    want = torch.stack([hs[layer][rows, pos].double() @ r[layer] for layer in (0, 1)], 1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # the cached anchors are keyed by the constrained position: exactly zero at step 0
    assert len(trainer.anchor_cache) == 4
    torch.testing.assert_close(trainer._anchors(model, batch, trainer._positions(batch)), got)
    trainer.position = -3  # the shortest prompt has 3 tokens
    with pytest.raises(DataError, match="before the start of a prompt"):
        trainer._positions(batch)


def test_drift_callback_tracks_values_and_stops_below_a_target(tmp_path):
    g = torch.Generator().manual_seed(5)
    harmful = torch.randint(3, VOCAB, (6, 5), generator=g)
    harmless = torch.randint(3, VOCAB, (6, 4), generator=g)
    probe = DiffInMeansProbe(
        harmful,
        torch.ones_like(harmful),
        harmless,
        torch.ones_like(harmless),
        layers=(0, 1),
        position=-1,
    )
    model = tiny_llama()
    values = iter([3.0, 2.0, 0.5, 0.1, 0.0])
    cb = DriftCallback(probe(model), probe, every=1, track={"loss_probe": lambda m: next(values)},
                       stop_below=("loss_probe", 1.0))  # fmt: skip
    trainer = make_trainer(model, HINGE, 1, 1, tmp_path, steps=4, callbacks=[cb],
                           directions=unit_directions(), thresholds=THRESH)  # fmt: skip
    trainer.train()
    assert [rec["loss_probe"] for rec in cb.history] == [3.0, 2.0, 0.5]
    assert cb.stopped_at == 3 and trainer.state.global_step == 3
    with pytest.raises(ConfigError, match="not tracked"):
        DriftCallback(probe(model), probe, stop_below=("nll", 1.0))
