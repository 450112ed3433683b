"""ProCon learner configuration (arXiv 2509.06795). Fields marked [inferred] are our choices: only
the paper's opening was available and there is no official code, so they are all configurable."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clinfuse.core.errors import ConfigError

Constraint = Literal["none", "procon", "procon_wu", "procon_wu_safe"]


@dataclass(frozen=True)
class ProConMethodConfig:
    """LoRA instruction fine-tuning with a projection constraint on the refusal direction."""

    model: str = "smollm2-135m"
    """Model spec for ``models.load_model``: ``smollm2-135m``, ``tiny-llama[:LxH]`` or a folder."""
    constraint: Constraint = "procon_wu"
    """``none`` (plain LoRA IFT, lam = 0), ``procon`` (constant lam), ``procon_wu`` (+ warm-up),
    ``procon_wu_safe`` (+ harmful prompt-only rows in every batch, anchored) [inferred]."""
    lam: float = 0.003
    """Weight lambda of the constraint after warm-up [inferred]. The term is in squared residual
    units, so lambda depends on the model's scale: 0.003 is the value tuned for SmolLM2-135M in
    ``benchmarks/procon.py`` (0.1 stalled task learning there)."""
    layers: str = ""
    """Constrained layers, comma separated (e.g. ``10,15,20,25``); empty = every layer >= L/3."""
    mode: Literal["anchor", "hinge"] = "anchor"
    """``anchor``: squared deviation of each projection from the frozen initial model's;
    ``hinge``: one-sided, max(0, tau - p)^2 with tau the initial projection (only stops the
    refusal signal shrinking) [inferred]."""
    position: int = 0
    """Token offset from the last prompt token at which the directions are computed, the
    projections constrained and the drift measured: 0 = the last chat-template token;
    negative = an earlier post-instruction template token, Arditi et al. style (for SmolLM2,
    -4 is the newline after ``<|im_end|>``, -5 ``<|im_end|>`` itself) [inferred]."""
    target_task_nll: float | None = None
    """Stop training once the task NLL on the fine-tuning rows (measured every ``drift_every``
    steps) is at or below this value; ``steps`` stays the cap. For comparisons of arms at equal
    task loss (``benchmarks/procon.py --match-loss``)."""
    anchor_source: Literal["cache", "disable_adapter"] = "cache"
    """Initial projections cached once before training, or recomputed every step with the LoRA
    adapter disabled (PEFT ``disable_adapter()``; an extra forward pass) [inferred]."""
    margin: float = 0.0
    """Hinge mode: a row is free once its projection clears tau by this margin [inferred]."""
    hinge_tau: Literal["row", "harmful_mean"] = "row"
    """Hinge mode: tau is each row's own initial projection (``row``), or per layer the initial
    mean harmful projection <mu_harmful, r> (``harmful_mean``) [inferred]."""
    warmup_shape: Literal["step", "linear", "cosine"] = "step"
    """How the warm-up multiplier goes from ``warmup_factor`` to 1 [inferred]."""
    warmup_steps: int | None = None
    """Warm-up length in optimiser steps; None = ceil(10% of steps) [inferred]."""
    warmup_factor: float = 5.0
    """Multiplier k of lambda during the warm-up [inferred]."""
    safe_per_batch: int = 2
    """``procon_wu_safe`` only: harmful prompt-only rows added to every batch (no CE, only the
    ProCon term, anchored to their initial projections) [inferred]."""
    safe_other_per_batch: int = 1
    """``procon_wu_safe`` only: prompt-only rows from another distribution (the harmless train
    instructions, Alpaca-style, unlike the fine-tuning tasks) added to every batch, anchored the
    same way: our reading of the paper's broadened constraint set (ProCon^wu_safe) [inferred]."""
    lora_r: int = 8
    """LoRA rank (paper: 8); alpha = 2 r."""
    steps: int = 40
    """Optimiser steps."""
    lr: float = 3e-3
    """AdamW learning rate (constant schedule) [inferred]."""
    batch_size: int = 4
    """Benign rows per micro-batch."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    n_benign: int = 64
    """Synthetic benign instruction/response pairs for fine-tuning (``data.benign_sft``)."""
    benign_tasks: str = "arithmetic,sort,reverse,convert,capital,howto"
    """Comma-separated benign task kinds (``data.TASKS``); ``howto`` is Alpaca-style compliance
    ("Sure! Here is exactly how to ...") [inferred]."""
    safety_data: str | None = None
    """Folder with the four safety split JSON files; None = the builtin 30 + 30 smoke set."""
    directions: str | None = None
    """A saved ``directions.pt`` to reuse instead of recomputing (checked against the model)."""
    n_direction: int = 24
    """Harmful and harmless train instructions per class for the difference of means."""
    n_eval: int = 8
    """Prompts per class for the refusal / over-refusal rates and held-out benign tasks."""
    max_new_tokens: int = 32
    """Greedy generation length in the evaluation."""
    generate_eval: bool = True
    """Generate for the refusal / over-refusal / task-accuracy evaluation (false: only NLL,
    directions and drift, as the benchmark's short version does)."""
    eval_base: bool = True
    """Also evaluate the model before fine-tuning (the baseline of the report)."""
    drift_every: int = 5
    """Measure cos(r_t, r_0) per layer every this many optimiser steps."""
    seed: int = 0
    """Seed of the data order, LoRA init and benign data."""
    progress: bool = False
    """Show the trainer's progress bar."""
    preset: str | None = None
    """Name of the preset the config came from (set by the CLI)."""

    def __post_init__(self) -> None:
        checks = {
            "steps >= 1": self.steps >= 1,
            "batch_size >= 1": self.batch_size >= 1,
            "grad_accum >= 1": self.grad_accum >= 1,
            "lora_r >= 1": self.lora_r >= 1,
            "n_benign >= batch_size": self.n_benign >= self.batch_size,
            "n_direction >= 1": self.n_direction >= 1,
            "n_eval >= 1": self.n_eval >= 1,
            "max_new_tokens >= 1": self.max_new_tokens >= 1,
            "drift_every >= 1": self.drift_every >= 1,
            "safe_per_batch >= 0": self.safe_per_batch >= 0,
            "safe_other_per_batch >= 0": self.safe_other_per_batch >= 0,
            "lam >= 0 and finite": self.lam >= 0 and math.isfinite(self.lam),
            "lr > 0": self.lr > 0,
            "margin >= 0": self.margin >= 0,
            "warmup_steps >= 0": self.warmup_steps is None or self.warmup_steps >= 0,
            "position <= 0": self.position <= 0,
            "target_task_nll > 0": self.target_task_nll is None or self.target_task_nll > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                "invalid ProCon configuration",
                expected=", ".join(bad),
                found={k: getattr(self, k) for k in ("steps", "batch_size", "n_benign", "lam")},
                fix="fix the listed fields (--set key=value)",
            )
        self.layer_list()
        self.task_list()

    def task_list(self) -> tuple[str, ...]:
        """``benign_tasks`` parsed and checked against ``data.TASKS``."""
        from clinfuse.methods.procon.data import TASKS

        tasks = tuple(t.strip() for t in self.benign_tasks.split(",") if t.strip())
        bad = [t for t in tasks if t not in TASKS]
        if bad or not tasks:
            raise ConfigError(
                "unknown benign task kinds",
                expected=f"a comma-separated subset of {', '.join(TASKS)}",
                found=bad or "no tasks",
                fix="--set benign_tasks=arithmetic,howto (for example)",
            )
        return tasks

    def layer_list(self) -> tuple[int, ...]:
        """The ``layers`` string parsed to ints; () means the default (every layer >= L/3)."""
        parts = [p.strip() for p in self.layers.split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ConfigError(
                "layers must be comma-separated integers",
                expected="e.g. '10,15,20,25' or '' (all layers >= L/3)",
                found=self.layers,
            ) from None

    @property
    def effective_lam(self) -> float:
        """Lambda actually used: 0 for ``constraint='none'``."""
        return 0.0 if self.constraint == "none" else self.lam

    @property
    def effective_warmup(self) -> int:
        """Warm-up steps actually used: 0 without ``_wu``; None resolves to ceil(steps / 10)."""
        if self.constraint in ("none", "procon"):
            return 0
        return math.ceil(self.steps / 10) if self.warmup_steps is None else self.warmup_steps
