r"""ProCon as a clinfuse learner: ``clinfuse fit procon``.

Pipeline of :meth:`ProCon.fit` (our reading of arXiv 2509.06795, see :mod:`.loss`):

1. Load the model and tokenizer; refuse a tokenizer without a chat template, layers outside the
   model, empty safety splits or a direction file of another model, all before any training step.
2. Refusal directions :math:`r_l = (\mu_l - \nu_l)/\lVert\mu_l - \nu_l\rVert` (difference of
   means at the last prompt token of chat-formatted prompts, generation prompt included) on the
   harmful / harmless train splits, saved as ``directions.pt``; per-layer validation AUROC of the
   projections :math:`\langle h_l, r_l\rangle` (harmful vs harmless val).
3. LoRA fine-tuning on synthetic benign instruction data with :class:`ProConSFTTrainer`:
   :math:`\mathcal L = \mathcal L_{\mathrm{CE}} + \lambda w(t)\,\mathrm{mean}_{i}\,
   \mathrm{mean}_{l\in S} (\langle h_l(x_i), r_l\rangle - \langle h^0_l(x_i), r_l\rangle)^2`.
   ``procon_wu_safe`` appends ``safe_per_batch`` harmful prompt-only rows to every batch: their
   completion mask is empty, so they add nothing to the CE term and only their (anchored)
   projection enters the constraint [inferred].
4. A :class:`DriftCallback` measures :math:`\cos(r^{(l)}_t, r^{(l)}_0)` on a fixed probe set of
   harmful / harmless validation prompts every ``drift_every`` steps.
5. Evaluation: keyword refusal rate on harmful val prompts, over-refusal on harmless val prompts,
   exact-answer accuracy on held-out benign tasks (greedy), and the benign task NLL.
"""

from __future__ import annotations

import logging
import math
import time as _time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import ConfigError, DataError, require
from clinfuse.core.learner import METHODS, DemoResult, Learner, check_split
from clinfuse.core.runs import RunDir, atomic_path
from clinfuse.llm.models import apply_lora, check_chat_template, load_model
from clinfuse.methods.procon.config import ProConMethodConfig
from clinfuse.methods.procon.data import (
    SafetySplits,
    benign_sft,
    load_safety_splits,
    task_accuracy,
    to_chat,
)
from clinfuse.methods.procon.directions import (
    DirectionSet,
    auroc,
    capture,
    compute_directions,
    decoder_layers,
    last_token_positions,
)
from clinfuse.methods.procon.evaluate import evaluate_safety, generate, refusal_rate
from clinfuse.methods.procon.loss import ProConConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# tokenisation helpers
# ------------------------------------------------------------------------------------------
def encode_prompts(tokenizer: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-formatted prompts (generation prompt added), right padded.

    Shape:
        Output: ``(input_ids (N, T), attention_mask (N, T))``.
    """
    rows = [
        tokenizer(to_chat(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts
    ]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def sft_row(tokenizer: Any, prompt: str, completion: str | None) -> dict[str, list[int]]:
    """``{"input_ids", "completion_mask"}`` of one chat exchange; ``completion=None`` gives a
    prompt-only row (empty completion mask) ending at the generation prompt."""
    p_ids = tokenizer(to_chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    if completion is None:
        return {"input_ids": list(p_ids), "completion_mask": [0] * len(p_ids)}
    full = tokenizer(to_chat(tokenizer, prompt, completion), add_special_tokens=False)["input_ids"]
    if list(full[: len(p_ids)]) != list(p_ids):
        # the template renders the exchange differently from prompt + answer: append by hand
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        full = list(p_ids) + list(c_ids) + eos
    n_p = len(p_ids)
    return {"input_ids": list(full), "completion_mask": [0] * n_p + [1] * (len(full) - n_p)}


def layout_rows(
    benign: list[dict[str, list[int]]],
    harmful: list[dict[str, list[int]]],
    batch_size: int,
    per_batch: int,
    seed: int,
    other: list[dict[str, list[int]]] | None = None,
    per_other: int = 0,
) -> list[dict[str, list[int]]]:
    """Seeded benign order, cut into batches of ``batch_size``, each followed by ``per_batch``
    harmful rows and ``per_other`` rows of ``other`` (each cycled); read sequentially with
    batches of ``batch_size + per_batch + per_other``.

    Example:
        >>> b = [{"i": [k]} for k in range(4)]
        >>> h = [{"i": [9]}]
        >>> [r["i"][0] for r in layout_rows(b, h, 2, 1, seed=0)].count(9)
        2
    """
    order = np.random.default_rng(seed).permutation(len(benign))
    n_batches = len(benign) // batch_size
    out: list[dict[str, list[int]]] = []
    extras = [(harmful, per_batch), (other or [], per_other)]
    counters = [0, 0]
    for b in range(n_batches):
        out.extend(benign[int(i)] for i in order[b * batch_size : (b + 1) * batch_size])
        for j, (rows, n) in enumerate(extras):
            for _ in range(n if rows else 0):
                out.append(rows[counters[j] % len(rows)])
                counters[j] += 1
    return out


def token_nll(model: Any, rows: list[dict[str, list[int]]], pad: int, batch: int = 8) -> float:
    r"""Mean NLL per completion token :math:`-\frac{1}{N}\sum \log p(y_t \mid y_{<t})`."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was = model.training
    model.eval()
    try:
        for s in range(0, len(rows), batch):
            chunk = rows[s : s + batch]
            width = max(len(r["input_ids"]) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            lab = torch.full_like(ids, -100)
            for i, r in enumerate(chunk):
                n = len(r["input_ids"])
                ids[i, :n] = torch.tensor(r["input_ids"])
                mask[i, :n] = 1
                cm = torch.tensor(r["completion_mask"], dtype=torch.bool)
                lab[i, :n] = torch.where(cm, ids[i, :n], -100)
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            tgt = lab[:, 1:].to(device)
            ok = tgt != -100
            picked = lp.gather(-1, tgt.clamp_min(0)[..., None])[..., 0]
            total += float(-(picked[ok]).sum())
            count += int(ok.sum())
    finally:
        model.train(was)
    return total / max(count, 1)


# ------------------------------------------------------------------------------------------
# the learner
# ------------------------------------------------------------------------------------------
@METHODS.register("procon")
class ProCon(Learner):
    """LoRA instruction fine-tuning that constrains the projection on the refusal direction."""

    name = "procon"
    config_cls = ProConMethodConfig
    description = "refusal-direction projection constraint during instruction fine-tuning"
    paper = "arXiv 2509.06795 (ProCon)"
    status = (
        "done (SmolLM2 benchmark, 3 seeds: drift gain 0.12–0.21 at equal task loss, direction "
        "AUROC ≥ 0.96 at layers 10–20; no GPU run)"
    )
    demo_preset = "tiny"

    def __init__(self, config: ProConMethodConfig) -> None:
        super().__init__(config)
        self.model: Any = None
        self.tokenizer: Any = None
        self.directions: DirectionSet | None = None
        self.metrics: dict[str, Any] = {}
        self.drift_history: list[dict[str, float]] = []
        self.log_history: list[dict[str, Any]] = []
        self._predictions: pd.DataFrame | None = None

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> SafetySplits:
        """Safety splits from ``path`` / ``config.safety_data`` (None: the builtin set),
        subsampled to ``n_direction`` train and ``n_eval`` val instructions per class."""
        cfg = self.config
        splits = load_safety_splits(path or cfg.safety_data)
        return splits.sample(cfg.n_direction, max(cfg.n_eval, 2), seed=cfg.seed)

    # -- checks ---------------------------------------------------------------------------
    def _layers(self, n_layers: int) -> tuple[int, ...]:
        layers = self.config.layer_list() or tuple(range(max(1, n_layers // 3), n_layers))
        bad = [layer for layer in layers if not 1 <= layer < n_layers]
        if bad:
            raise ConfigError(
                "ProCon layer index outside the model",
                expected=f"layers in [1, {n_layers}) (decoder block inputs; layer 0 is the token "
                "embedding, identical for every prompt at the last chat-template token)",
                found=bad,
                fix=f"--set layers=... with indices below {n_layers}, or '' for all >= L/3",
            )
        return layers

    def _directions(self, model: Any, data: SafetySplits, run: RunDir) -> DirectionSet:
        cfg = self.config
        if cfg.directions is not None:
            dirs = DirectionSet.load(cfg.directions, model)
            if dirs.position != cfg.position:
                raise DataError(
                    "the direction file was computed at another token position",
                    expected=f"position {cfg.position} (config)",
                    found=f"position {dirs.position} in {cfg.directions}",
                    fix=f"--set position={dirs.position}, or recompute (leave `directions` unset)",
                )
            missing = [layer for layer in range(1, dirs.n_layers) if layer not in dirs.layers]
            if missing:
                raise DataError(
                    "the direction file lacks layers",
                    expected=f"a direction for every layer 1..{dirs.n_layers - 1}",
                    found=f"missing {missing}",
                    fix="recompute the directions (leave `directions` unset)",
                )
        else:
            tok = self.tokenizer
            dirs = compute_directions(
                model,
                encode_prompts(tok, list(data.harmful_train)),
                encode_prompts(tok, list(data.harmless_train)),
                layers=range(1, len(decoder_layers(model))),
                positions=cfg.position,
                batch_size=16,
            )
        dirs.save(run.path / "directions.pt")
        return dirs

    def _hinge_thresholds(self, layers: tuple[int, ...]) -> dict[int, float] | None:
        """Per-layer tau = <mu_harmful, r> for ``mode=hinge, hinge_tau=harmful_mean``, else None
        (the trainer then anchors each row to its own initial projection)."""
        cfg, dirs = self.config, self.directions
        if cfg.mode != "hinge" or cfg.hinge_tau != "harmful_mean":
            return None
        assert dirs is not None
        if dirs.mean_harmful is None:
            raise DataError(
                "hinge_tau=harmful_mean needs the class means in the direction file",
                expected="a DirectionSet with mean_harmful",
                found="a direction file without class means",
                fix="recompute the directions (leave `directions` unset) or use hinge_tau=row",
            )
        index = {layer: i for i, layer in enumerate(dirs.layers)}
        return {
            layer: float(dirs.mean_harmful[index[layer]] @ dirs.directions[index[layer]])
            for layer in layers
        }

    def _capture_prompts(self, model: Any, prompts: list[str], layers: list[int]) -> dict:
        """Residual stream of chat-formatted ``prompts`` at the configured position."""
        ids, mask = encode_prompts(self.tokenizer, prompts)
        pos = last_token_positions(mask, self.config.position)
        return capture(model, ids, mask, layers=layers, positions=pos)

    def _val_auroc(self, model: Any, data: SafetySplits) -> dict[str, float]:
        assert self.directions is not None
        layers = list(self.directions.layers)
        hv = self._capture_prompts(model, list(data.harmful_val), layers)
        bv = self._capture_prompts(model, list(data.harmless_val), layers)
        ph, pb = self.directions.project(hv), self.directions.project(bv)
        return {f"auroc/L{layer}": auroc(ph[layer], pb[layer]) for layer in layers}

    # -- evaluation -----------------------------------------------------------------------
    def _evaluate_model(self, data: SafetySplits, prefix: str) -> tuple[dict, pd.DataFrame]:
        cfg = self.config
        harmful = list(data.harmful_val[: cfg.n_eval])
        harmless = list(data.harmless_val[: cfg.n_eval])
        res = evaluate_safety(
            self.model, self.tokenizer, harmful, harmless, cfg.max_new_tokens, return_texts=True
        )
        tasks = benign_sft(cfg.n_eval, seed=cfg.seed + 10_000)
        outs = generate(
            self.model, self.tokenizer, [t["prompt"] for t in tasks], cfg.max_new_tokens
        )
        metrics = {
            f"{prefix}refusal_rate_harmful": res["refusal_rate_harmful"],
            f"{prefix}over_refusal_harmless": res["over_refusal_harmless"],
            f"{prefix}task_accuracy": task_accuracy(outs, tasks),
        }
        frames = [
            pd.DataFrame(
                {"kind": "harmful", "prompt": harmful, "completion": res["harmful_completions"]}
            ),
            pd.DataFrame(
                {"kind": "harmless", "prompt": harmless, "completion": res["harmless_completions"]}
            ),
            pd.DataFrame(
                {
                    "kind": "task",
                    "prompt": [t["prompt"] for t in tasks],
                    "completion": outs,
                    "answer": [t["answer"] for t in tasks],
                }
            ),
        ]
        df = pd.concat(frames, ignore_index=True)
        df["refusal"] = [refusal_rate([c]) == 1.0 for c in df["completion"]]
        df["stage"] = prefix.rstrip("_") or "final"
        return metrics, df

    # -- fit ------------------------------------------------------------------------------
    def fit(self, data: SafetySplits, run: RunDir, *, resume: bool = False) -> ProCon:
        require("trl", "llm")
        require("datasets", "llm")
        import datasets

        from clinfuse.methods.procon.trainer import (
            DiffInMeansProbe,
            DriftCallback,
            ProConSFTTrainer,
        )

        cfg = self.config
        t0 = _time.perf_counter()
        torch.manual_seed(cfg.seed)
        model, tok = load_model(cfg.model, seed=cfg.seed)
        check_chat_template(tok, cfg.model)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.model, self.tokenizer = model, tok
        n_layers = len(decoder_layers(model))
        layers = self._layers(n_layers)
        if not isinstance(data, SafetySplits):
            raise DataError(
                "ProCon.fit needs SafetySplits",
                expected="SafetySplits",
                found=type(data).__name__,
                fix="use learner.load_data()",
            )
        self.directions = self._directions(model, data, run)
        metrics: dict[str, Any] = {"n_layers": n_layers, "constrained_layers": list(layers)}
        metrics |= self._val_auroc(model, data)
        t_dir = _time.perf_counter() - t0

        rows, benign_rows, heldout_rows, batch = self._training_rows(tok, data)
        pad = tok.pad_token_id
        metrics["task_nll_base"] = token_nll(model, benign_rows, pad)
        metrics["task_nll_heldout_base"] = token_nll(model, heldout_rows, pad)

        base_pred = None
        if cfg.eval_base and cfg.generate_eval:
            base, base_pred = self._evaluate_model(data, "base_")
            metrics |= base

        # drift probe on a fixed set of validation prompts
        h_ids, h_mask = encode_prompts(tok, list(data.harmful_val))
        b_ids, b_mask = encode_prompts(tok, list(data.harmless_val))
        probe = DiffInMeansProbe(
            h_ids, h_mask, b_ids, b_mask, tuple(range(1, n_layers)), position=cfg.position
        )

        self.model = model = apply_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r)
        model.train()
        r0 = probe(model)
        drift = DriftCallback(
            r0,
            probe,
            every=cfg.drift_every,
            track={"task_nll": lambda m: token_nll(m, benign_rows, pad)},
            stop_below=None if cfg.target_task_nll is None else ("task_nll", cfg.target_task_nll),
        )
        procon = ProConConfig(
            mode=cfg.mode,
            lam=cfg.effective_lam,
            layers=layers,
            warmup_steps=cfg.effective_warmup,
            warmup_factor=cfg.warmup_factor,
            warmup_shape=cfg.warmup_shape,
            margin=cfg.margin,
            anchor_source=cfg.anchor_source,
        )
        args = self._sft_config(run, batch)
        dirs = {layer: self.directions[layer] for layer in layers}
        trainer = ProConSFTTrainer(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tok,
            procon=procon,
            directions=dirs,
            thresholds=self._hinge_thresholds(layers),
            position=cfg.position,
            callbacks=[drift],
        )
        drift.history.append(drift.measure(model, 0))
        t1 = _time.perf_counter()
        trainer.train()
        t_train = _time.perf_counter() - t1
        if not drift.history or drift.history[-1]["step"] != trainer.state.global_step:
            drift.history.append(drift.measure(model, trainer.state.global_step))
        self.drift_history = list(drift.history)
        self.log_history = [dict(h) for h in trainer.state.log_history]
        metrics |= self._training_metrics()
        model.eval()
        metrics["task_nll_heldout"] = token_nll(model, heldout_rows, pad)
        pred = None
        if cfg.generate_eval:
            final_eval, pred = self._evaluate_model(data, "")
            metrics |= final_eval
        metrics |= {
            "constraint": cfg.constraint,
            "lam": procon.lam,
            "warmup_steps": procon.warmup_steps,
            "steps": trainer.state.global_step,
            "stopped_at_target": drift.stopped_at is not None,
            "n_train_rows": len(rows),
            "seconds_directions": t_dir,
            "seconds_train": t_train,
            "seconds_total": _time.perf_counter() - t0,
        }
        self._save(run, data, metrics, [p for p in (base_pred, pred) if p is not None])
        log.info(
            "procon (%s): mean drift cos %.3f, refusal %s, task NLL %.3f in %.0f s",
            cfg.constraint,
            metrics["drift_cos/mean"],
            metrics.get("refusal_rate_harmful", "n/a"),
            metrics["task_nll"],
            metrics["seconds_total"],
        )
        return self

    def _training_rows(self, tok: Any, data: SafetySplits) -> tuple[list, list, list, int]:
        """The SFT rows laid out per batch (benign task rows, plus harmful-prompt refusal rows
        and harmless rows under ``procon_wu_safe``), the benign rows alone, held-out benign
        rows for the task NLL, and the per-device batch size."""
        cfg = self.config
        tasks = cfg.task_list()
        benign = benign_sft(cfg.n_benign, seed=cfg.seed, tasks=tasks)
        benign_rows = [sft_row(tok, ex["prompt"], ex["completion"]) for ex in benign]
        heldout = benign_sft(max(cfg.n_eval, 16), seed=cfg.seed + 10_000, tasks=tasks)
        heldout_rows = [sft_row(tok, ex["prompt"], ex["completion"]) for ex in heldout]
        safe = cfg.constraint == "procon_wu_safe"
        per_batch = cfg.safe_per_batch if safe else 0
        per_other = cfg.safe_other_per_batch if safe else 0
        harmful_rows = [sft_row(tok, p, None) for p in data.harmful_train] if per_batch else []
        other_rows = [sft_row(tok, p, None) for p in data.harmless_train] if per_other else []
        rows = layout_rows(
            benign_rows, harmful_rows, cfg.batch_size, per_batch, cfg.seed, other_rows, per_other
        )
        return rows, benign_rows, heldout_rows, cfg.batch_size + per_batch + per_other

    def _sft_config(self, run: RunDir, batch: int) -> Any:
        """TRL's SFTConfig: constant learning rate, completion-only loss, rows in the laid-out
        order (``sequential``), no trainer checkpoints (the run keeps its own)."""
        from trl import SFTConfig

        cfg = self.config
        return SFTConfig(
            output_dir=str(run.path / "trainer"),
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=cfg.grad_accum,
            max_steps=cfg.steps,
            learning_rate=cfg.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            completion_only_loss=True,
            max_length=None,  # trl drops rows left without labels after truncation
            report_to=[],
            save_strategy="no",
            logging_steps=1,
            use_cpu=not torch.cuda.is_available(),
            seed=cfg.seed,
            data_seed=cfg.seed,
            train_sampling_strategy="sequential",
            dataloader_drop_last=True,
            disable_tqdm=not cfg.progress,
            activation_checkpointing=False,
            bf16=False,
        )

    def _training_metrics(self) -> dict[str, Any]:
        """Drift at the final step and its minimum, the ProCon term, the last training loss and
        the task NLL (the last drift record is at the final step)."""
        final = self.drift_history[-1]
        out: dict[str, Any] = {k: v for k, v in final.items() if k.startswith("drift_cos/")}
        out["drift_cos/min_over_steps"] = min(h["drift_cos/mean"] for h in self.drift_history)
        procon_log = [h["procon"] for h in self.log_history if "procon" in h]
        out["procon_term_max"] = max(procon_log) if procon_log else 0.0
        out["procon_term_last"] = procon_log[-1] if procon_log else 0.0
        out["train_loss_last"] = next(
            (h["loss"] for h in reversed(self.log_history) if "loss" in h), float("nan")
        )
        out["task_nll"] = final["task_nll"]
        return out

    def _save(
        self, run: RunDir, data: SafetySplits, metrics: dict[str, Any], frames: list[pd.DataFrame]
    ) -> None:
        """Metrics, drift log, predictions (generations, or val-prompt projections without
        generation), checkpoints and plots of the run."""
        self.metrics = metrics
        self._predictions = pd.concat(frames) if frames else self._projection_frame(data)
        for rec in self.drift_history:
            run.log_epoch({"epoch": rec["step"], **rec})
        run.write_metrics(metrics)
        run.write_predictions(self._predictions)
        # best = last: the model after the last step is the one kept
        run.save_final_checkpoint(self.state_dict())
        self.plot(run)

    def _projection_frame(self, data: SafetySplits) -> pd.DataFrame:
        """Predictions of a run without generation: each val prompt's projection on the initial
        direction r_0 at every layer (a harmful-vs-harmless score), after fine-tuning."""
        assert self.directions is not None
        layers = list(self.directions.layers)
        frames = []
        for kind, prompts in (("harmful", data.harmful_val), ("harmless", data.harmless_val)):
            hidden = self._capture_prompts(self.model, list(prompts), layers)
            proj = self.directions.project(hidden)
            frame = pd.DataFrame({"kind": kind, "prompt": list(prompts)})
            for layer in layers:
                frame[f"proj/L{layer}"] = proj[layer].numpy()
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        out["stage"] = "final"
        return out

    # -- evaluate / predict ---------------------------------------------------------------
    def evaluate(self, data: SafetySplits, split: str = "test", corrupt: str | None = None) -> dict:
        """Refusal / over-refusal on the val splits of ``data`` and held-out task accuracy
        (``split`` is ``test``: the held-out instructions and tasks)."""
        check_split(split, ("test",))
        self._require_model()
        if corrupt is not None:
            raise ConfigError("ProCon has no corruptions", expected=None, found=corrupt)
        metrics, self._predictions = self._evaluate_model(data, "")
        return metrics

    def predict(self, data: SafetySplits, split: str = "test") -> pd.DataFrame:
        """Generations (kind, prompt, completion, refusal) on the val prompts and tasks."""
        check_split(split, ("test",))
        self._require_model()
        return self._evaluate_model(data, "")[1]

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        peft = require("peft", "llm")
        model = self._require_model()
        adapter = {k: v.detach().cpu() for k, v in peft.get_peft_model_state_dict(model).items()}
        out: dict[str, Any] = {"adapter": adapter}
        if self.directions is not None:
            out["directions"] = self.directions.to_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        peft = require("peft", "llm")
        cfg = self.config
        model, tok = load_model(cfg.model, seed=cfg.seed)
        check_chat_template(tok, cfg.model)
        model = apply_lora(model, r=cfg.lora_r, alpha=2 * cfg.lora_r)
        peft.set_peft_model_state_dict(model, state["adapter"])
        self.model, self.tokenizer = model.eval(), tok

    # -- report ---------------------------------------------------------------------------
    def report_table(self) -> str:
        m = self.metrics
        keys = [
            "drift_cos/mean",
            "refusal_rate_harmful",
            "over_refusal_harmless",
            "task_accuracy",
            "task_nll",
        ]
        lines = ["| " + " | ".join(["stage", *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
        for stage, prefix in (("base", "base_"), (m.get("constraint", "final"), "")):
            cells = []
            for k in keys:
                v = m.get(prefix + k, 1.0 if stage == "base" and k.startswith("drift") else None)
                if stage == "base" and k == "task_nll":
                    v = m.get("task_nll_base")
                cells.append("" if v is None else f"{float(v):.4f}")
            lines.append("| " + " | ".join([str(stage), *cells]) + " |")
        return "\n".join(lines)

    def plot(self, run: RunDir) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out: list[Path] = []
        m, hist = self.metrics, self.drift_history
        layer_keys = sorted(
            (k for k in m if k.startswith("drift_cos/L")),
            key=lambda k: int(k[len("drift_cos/L") :]),
        )
        if layer_keys:
            xs = [int(k[len("drift_cos/L") :]) for k in layer_keys]
            fig, ax = plt.subplots(figsize=(6.5, 3.6))
            ax.bar(xs, [m[k] for k in layer_keys], color="tab:blue", label="cos(r_T, r_0)")
            au = [m.get(f"auroc/L{x}", math.nan) for x in xs]
            ax.plot(xs, au, "o-", color="tab:orange", ms=3, label="val AUROC (step 0)")
            ax.set_xlabel("layer")
            ax.set_ylim(min(0.0, min(m[k] for k in layer_keys)), 1.05)
            ax.set_title(f"refusal-direction drift per layer ({m.get('constraint')})")
            ax.legend(loc="lower left", fontsize=8)
            out.append(_save(fig, run.plots / "drift_per_layer.png"))
        if hist:
            fig, ax = plt.subplots(figsize=(6.5, 3.6))
            steps = [h["step"] for h in hist]
            ax.plot(steps, [h["drift_cos/mean"] for h in hist], "k-o", lw=2, label="mean")
            keys = [k for k in hist[-1] if k.startswith("drift_cos/L")]
            for k in keys[:: max(1, len(keys) // 5)]:
                ax.plot(steps, [h[k] for h in hist], lw=1, alpha=0.7, label=k.split("/")[1])
            ax.set_xlabel("optimiser step")
            ax.set_ylabel("cos(r_t, r_0)")
            ax.set_title("refusal-direction drift over training")
            ax.legend(fontsize=7, ncol=2)
            out.append(_save(fig, run.plots / "drift_over_steps.png"))
        return out

    def demo(self, data: SafetySplits, run: RunDir) -> DemoResult:
        m = run.read_metrics() or self.metrics
        return DemoResult(
            system=f"procon ({m.get('constraint')})",
            data=data.source,
            metric="mean cos(r_T, r_0) over layers",
            value=float(m["drift_cos/mean"]),
            baseline="no drift",
            baseline_value=1.0,
            extra={
                k: float(m[k])
                for k in (
                    "refusal_rate_harmful",
                    "base_refusal_rate_harmful",
                    "task_accuracy",
                    "base_task_accuracy",
                    "task_nll",
                    "task_nll_base",
                )
                if k in m
            },
            plots=sorted(run.plots.glob("*.png")),
        )


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
