"""DeepMedix-R1 learner configuration (arXiv 2509.03906). Fields marked [inferred] are our
choices: the paper's training hyper-parameters are not public (the official repository,
DeepReasoning/DeepMedix-R1, holds only the prompt and the reward)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from clinfuse.core.config import check_fields

Stage = Literal["sft", "coldstart", "grpo"]
Compat = Literal["deepmedix", "fixed"]
GRPOLoss = Literal["grpo", "dapo", "bnpo", "dr_grpo"]


@dataclass(frozen=True)
class DeepMedixConfig:
    """One stage of the three-stage DeepMedix-R1 pipeline; each stage is one run."""

    stage: Stage = "sft"
    """``sft`` (stage 1: SFT on question/answer records), ``coldstart`` (stage 2: SFT on
    synthetic reasoning samples in the DeepMedix output format) or ``grpo`` (stage 3: GRPO
    with the DeepMedix rewards and KL to the frozen stage-2 model)."""
    model: str = "tiny-llama"
    """``tiny-llama``, ``tiny-qwen2.5-vl`` or a local Hugging Face folder (e.g. Qwen2.5-VL-7B);
    ignored when ``init`` is set."""
    init: str | None = None
    """The previous stage: its run directory (``<run>/model`` is loaded) or a model folder."""
    data: str | None = None
    """Records (``.jsonl`` / ``.parquet``: image, question, answer, type[, boxes]); None = the
    packaged default records on the pydicom-data radiograph."""
    allow_outside_paths: bool = False
    """Accept image paths in ``data`` that lie outside the record file's folder (absolute
    paths, ``..``); off, such a record is refused."""
    n_records: int = 8
    """Default records generated when ``data`` is None."""
    test_fraction: float = 0.25
    """Share of records held out for the evaluation (at least one)."""
    image_size: int = 512
    """Images are resized to this square size (the reward's box bound is 512) [inferred]."""
    grid: int = 3
    """Cold start: grid of candidate regions the synthetic reasoning samples cite [inferred]."""
    lora: bool = False
    """Train LoRA adapters (merged into the saved model) instead of all weights."""
    lora_r: int = 8
    """LoRA rank (alpha = 2 r) when ``lora``."""
    steps: int = 4
    """Optimiser steps."""
    lr: float = 1e-4
    """AdamW learning rate (constant schedule) [inferred]."""
    batch_size: int = 2
    """Rows per device batch (GRPO: completions per device batch)."""
    grad_accum: int = 1
    """Gradient accumulation steps."""
    num_generations: int = 2
    """GRPO: completions sampled per prompt (EasyR1 example: 5) [inferred]."""
    beta: float = 0.01
    """GRPO: KL coefficient to the frozen reference (EasyR1 ``kl_coef`` 1e-2); must be > 0."""
    loss_type: GRPOLoss = "grpo"
    """GRPO loss normalisation; ``grpo`` as in the paper's figure."""
    temperature: float = 1.0
    """GRPO sampling temperature (EasyR1 example: 1.0)."""
    max_completion_length: int = 64
    """GRPO: new tokens per sampled completion."""
    reward_compat: Compat = "deepmedix"
    """``deepmedix`` reproduces the official reward (character BLEU, box-presence bonus);
    ``fixed`` uses word BLEU and IoU with ground-truth boxes."""
    max_new_tokens: int = 64
    """Greedy generation length of the evaluation and the saved samples."""
    eval_base: bool = False
    """Also evaluate the model before this stage's training (the baseline of the report)."""
    n_samples: int = 4
    """Sample generations saved per stage (``samples.jsonl``)."""
    arena_reports: int = 8
    """``evaluate --arena``: OPEN-I studies in the Report Arena."""
    arena_boot: int = 200
    """``evaluate --arena``: bootstrap resamples of the Bradley-Terry scores."""
    arena_judges: str = "local:report-score"
    """``evaluate --arena``: comma-separated judges. ``local:report-score`` (the metrics'
    ``report_score``), ``local:token-f1``, or any ``llm`` backend spec, e.g.
    ``openai:gpt-4o-mini@http://localhost:8000/v1`` or ``gemini:gemini-2.5-pro`` (each judge
    sees the reference and both reports, in both orders; calls cached in the arena folder)."""
    arena_l2: float = 0.01
    """``evaluate --arena``: ridge on the Bradley-Terry log-odds, so a model that never loses
    (e.g. the reference itself under a deterministic judge) keeps a finite score [inferred]."""
    seed: int = 0
    """Seed of the model init, data split, synthetic samples and training order."""
    progress: bool = False
    """Show the trainer's progress bar."""
    preset: str | None = None
    """Name of the preset the config came from (set by the CLI)."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "steps": (self.steps >= 1, ">= 1"),
                "batch_size": (self.batch_size >= 1, ">= 1"),
                "grad_accum": (self.grad_accum >= 1, ">= 1"),
                "n_records": (self.n_records >= 2, ">= 2 (one to train, one to evaluate)"),
                "test_fraction": (0 < self.test_fraction < 1, "in (0, 1)"),
                "image_size": (self.image_size >= 28, ">= 28 (two 14-px patches)"),
                "grid": (self.grid >= 1, ">= 1"),
                "lora_r": (self.lora_r >= 1, ">= 1"),
                "lr": (self.lr > 0 and math.isfinite(self.lr), "> 0"),
                "num_generations": (
                    self.num_generations >= 2
                    and (
                        self.stage != "grpo"
                        or (self.batch_size * self.grad_accum) % self.num_generations == 0
                    ),
                    ">= 2 (a group), and for GRPO dividing batch_size * grad_accum",
                ),
                "beta": (self.beta > 0, "> 0 (DeepMedix-R1 keeps a KL to the reference)"),
                "temperature": (self.temperature > 0, "> 0"),
                "max_completion_length": (self.max_completion_length >= 1, ">= 1"),
                "max_new_tokens": (self.max_new_tokens >= 1, ">= 1"),
                "n_samples": (self.n_samples >= 0, ">= 0"),
                "arena_reports": (self.arena_reports >= 1, ">= 1"),
                "arena_boot": (self.arena_boot >= 1, ">= 1"),
                "arena_l2": (self.arena_l2 >= 0, ">= 0"),
                "arena_judges": (
                    any(s.strip() for s in self.arena_judges.split(",")),
                    "at least one judge spec",
                ),
            },
        )
