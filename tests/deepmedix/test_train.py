"""DeepMedix training stages on tiny random models: one SFT step and a 2-step GRPO run change
every parameter (the vision tower too, so the images reach the loss); GRPO's frozen reference
is the saved folder and its KL is logged."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("trl")

from tests.deepmedix.tiny import noise_image, snapshot, tiny, unchanged  # noqa: E402

from clinfuse.methods.deepmedix.models import save_model  # noqa: E402
from clinfuse.methods.deepmedix.train import (  # noqa: E402
    sft_rows,
    train_grpo,
    train_sft,
    user_turn,
)

logging.getLogger("transformers").setLevel(logging.ERROR)


def cfg(**kw):
    base = {"batch_size": 2, "grad_accum": 1, "steps": 1, "lr": 1e-2, "seed": 0,
            "progress": False, "lora": False, "lora_r": 4, "num_generations": 2,
            "max_completion_length": 6, "beta": 0.04, "loss_type": "grpo",
            "temperature": 1.0}  # fmt: skip
    return SimpleNamespace(**{**base, **kw})


def length_reward(prompts, completions, **columns):
    """Varies across a group, so advantages are non-zero and the policy moves."""
    assert "answer" in columns  # data set columns reach the reward callables
    return [float(len(str(c))) for c in completions]


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-qwen2.5-vl"])
def test_one_sft_step_changes_every_parameter(spec, tmp_path):
    m = tiny(spec)
    images = [noise_image(0), noise_image(1)] if m.is_vlm else None
    rows = sft_rows(["Is there effusion?", "Which side?"], ["yes", "left"], images)
    before = snapshot(m.model)
    trainer = train_sft(m, rows, cfg(), tmp_path)
    assert trainer.state.global_step == 1
    assert unchanged(before, trainer.model) == []  # vision tower included for the VLM
    assert any(n.startswith("model.visual") for n in before) == m.is_vlm


def test_sft_with_lora_changes_only_adapters(tmp_path):
    m = tiny("tiny-llama")
    rows = sft_rows(["Is there effusion?", "Which side?"], ["yes", "left"], None)
    before = snapshot(m.model)
    trainer = train_sft(m, rows, cfg(lora=True), tmp_path)
    assert len(unchanged(before, trainer.model)) == len(before)  # base weights frozen
    lora = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().max() > 0 for p in lora.values())  # B starts at 0


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-qwen2.5-vl"])
def test_two_grpo_steps_with_kl_to_the_saved_reference(spec, tmp_path):
    m = tiny(spec)
    folder = save_model(m, tmp_path / "stage2")
    img = m.is_vlm
    rows = [{"prompt": user_turn(f"Q{i}?", img), "answer": "yes", "boxes": [],
             **({"image": noise_image(i)} if img else {})} for i in range(4)]  # fmt: skip
    before = snapshot(m.model)
    trainer = train_grpo(folder, m, rows, [length_reward], cfg(steps=2), tmp_path / "t")
    assert trainer.state.global_step == 2
    assert unchanged(before, trainer.model) == []
    ref = trainer.ref_model
    assert ref is not None and ref.config._name_or_path == str(folder)
    # the reference stays frozen at the saved weights
    assert len(unchanged(before, ref)) == len(before)
    assert ref is not trainer.model
    kls = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    assert len(kls) == 2 and kls[0] == pytest.approx(0.0, abs=1e-6) and kls[1] > 0


def test_generation_prompt_uses_the_chat_template():
    m = tiny("tiny-llama")
    text = m.tokenizer.apply_chat_template(user_turn("hi", False), add_generation_prompt=True,
                                           tokenize=False)  # fmt: skip
    assert text.rstrip().endswith("assistant") and "hi" in text
