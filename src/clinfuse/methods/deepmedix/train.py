r"""The three DeepMedix-R1 training stages on TRL, and greedy generation.

- **Stage 1 (``sft``)** and **stage 2 (``coldstart``)**: TRL ``SFTTrainer`` on conversational
  prompt/completion rows, loss on the completion only:
  :math:`\mathcal L = -\frac{1}{|c|}\sum_{t \in c}\log \pi_\theta(y_t \mid y_{<t}, x, I)`.
- **Stage 3 (``grpo``)**: TRL ``GRPOTrainer`` with ``loss_type="grpo"`` and ``beta > 0``. For a
  prompt, :math:`G` completions :math:`o_i` get rewards :math:`r_i` and advantages
  :math:`\hat A_i = (r_i - \mathrm{mean}(r)) / \mathrm{std}(r)`; the loss is
  :math:`-\frac1G\sum_i \frac{1}{|o_i|}\sum_t \big[\min(\rho_{i,t}\hat A_i,
  \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_i) - \beta\,
  \mathbb D_{KL}[\pi_\theta \Vert \pi_{ref}]\big]`. The policy and the frozen reference are both
  loaded from the saved folder of the previous stage (TRL rebuilds the reference from the
  model's ``name_or_path``, empty for an in-memory model: ``GRPOTrainer.__init__`` and
  ``get_config_model_id`` in ``trl/trainer/utils.py``, trl 1.16).

Images travel as an ``image`` column (one PIL image per row) with an ``{"type": "image"}``
placeholder in the user turn; a text-only model gets the text alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from clinfuse.core.errors import require
from clinfuse.methods.deepmedix.models import LoadedModel

log = logging.getLogger(__name__)


def user_turn(text: str, with_image: bool) -> list[dict[str, Any]]:
    """The chat prompt of one row: a user turn, with an image placeholder for a VLM.

    Example:
        >>> user_turn("Is there effusion?", False)
        [{'role': 'user', 'content': 'Is there effusion?'}]
    """
    content: Any = [{"type": "image"}, {"type": "text", "text": text}] if with_image else text
    return [{"role": "user", "content": content}]


def sft_rows(
    prompts: Sequence[str], completions: Sequence[str], images: Sequence[Any] | None
) -> list[dict[str, Any]]:
    """Conversational prompt/completion rows for ``SFTTrainer`` (``image`` column for a VLM)."""
    rows = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        row: dict[str, Any] = {
            "prompt": user_turn(p, images is not None),
            "completion": [{"role": "assistant", "content": c}],
        }
        if images is not None:
            row["image"] = images[i]
        rows.append(row)
    return rows


def _common_args(cfg: Any, out: Path) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(out),
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "max_steps": cfg.steps,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "disable_tqdm": not cfg.progress,
        "gradient_checkpointing": False,
    }


def _lora(cfg: Any) -> Any:
    if not cfg.lora:
        return None
    peft = require("peft", "llm")
    return peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=2 * cfg.lora_r,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def train_sft(loaded: LoadedModel, rows: list[dict[str, Any]], cfg: Any, out: Path) -> Any:
    """Stage 1 or 2: one ``SFTTrainer`` run on ``rows``; returns the trainer (trained model in
    ``trainer.model``, logs in ``trainer.state.log_history``)."""
    require("trl", "llm")
    import datasets
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **_common_args(cfg, out),
        completion_only_loss=True,
        max_length=None,  # never truncate away the image tokens or the whole completion
        dataloader_drop_last=False,
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=loaded.processor,
        peft_config=_lora(cfg),
    )
    trainer.train()
    return trainer


def train_grpo(
    model_dir: Path,
    loaded: LoadedModel,
    rows: list[dict[str, Any]],
    reward_funcs: list[Callable[..., list[float]]],
    cfg: Any,
    out: Path,
) -> Any:
    """Stage 3: ``GRPOTrainer`` with policy and reference loaded from ``model_dir``.

    ``rows`` hold ``prompt`` (a chat), the reward columns and, for a VLM, ``image``.
    """
    require("trl", "llm")
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    loaded.tokenizer.padding_side = "left"
    args = GRPOConfig(
        **_common_args(cfg, out),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        temperature=cfg.temperature,
        model_init_kwargs={"dtype": torch.float32} if not torch.cuda.is_available() else None,
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        args=args,
        reward_funcs=list(reward_funcs),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=loaded.processor,
        peft_config=_lora(cfg),
    )
    trainer.train()
    return trainer


@torch.no_grad()
def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    max_new_tokens: int = 64,
) -> list[str]:
    """Greedy completions, one prompt at a time (``images[i]`` goes with ``prompts[i]``).

    Shape:
        prompts: ``N`` strings; images: None or ``N`` PIL images. Output: ``N`` strings.
    """
    model, tok = loaded.model, loaded.tokenizer
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    outs: list[str] = []
    try:
        for i, prompt in enumerate(prompts):
            if loaded.is_vlm:
                image = images[i] if images is not None else None
                msgs = [
                    {
                        "role": "user",
                        "content": [
                            *([{"type": "image", "image": image}] if image is not None else []),
                            {"type": "text", "text": prompt},
                        ],
                    }
                ]
                enc = loaded.processor.apply_chat_template(
                    [msgs],
                    add_generation_prompt=True,
                    tokenize=True,
                    return_dict=True,
                    return_tensors="pt",
                )
            else:
                text = tok.apply_chat_template(
                    user_turn(prompt, False), add_generation_prompt=True, tokenize=False
                )
                enc = tok(text, return_tensors="pt", add_special_tokens=False)
            enc = {k: v.to(device) if hasattr(v, "to") else v for k, v in enc.items()}
            n = enc["input_ids"].shape[1]
            ids = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            outs.append(tok.decode(ids[0, n:], skip_special_tokens=True))
    finally:
        model.train(was)
    return outs
