r"""DeepMedix-R1 as a clinfuse learner: ``clinfuse fit deepmedix --set stage=sft|coldstart|grpo``.

Each stage is one run that reads the previous stage's saved model (``--set init=<run dir>``)
and writes its own ``model/`` folder (model + processor) for the next:

1. ``sft``: supervised fine-tuning on {question, answer} records.
2. ``coldstart``: SFT on synthetic reasoning samples in the DeepMedix format
   (``<think> ... [x1, y1, x2, y2] ... </think> The answer is: \boxed{...}``).
3. ``grpo``: GRPO with the DeepMedix rewards (format, accuracy, coordinate; their sum is the
   official ``overall``), ``beta > 0`` and ``loss_type="grpo"``; the frozen reference model is
   the saved folder of stage 2.

Every stage evaluates greedy generations with the DeepMedix prompt on held-out records
(reward terms, VQA score = accuracy / 1.5, report metrics on report records) and saves sample
generations (``samples.jsonl``). ``clinfuse evaluate deepmedix --run RUN --arena`` also runs
Report Arena on OPEN-I reports (the model's reports against corrupted copies of the reference).
"""

from __future__ import annotations

import json
import logging
import math
import time as _time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.learner import METHODS, DemoResult, Learner, check_split
from clinfuse.core.runs import RunDir, atomic_path, atomic_write_text
from clinfuse.methods.deepmedix.config import DeepMedixConfig
from clinfuse.methods.deepmedix.models import (
    LoadedModel,
    load_image,
    load_model,
    model_info,
    resolve_model_dir,
    save_model,
)

log = logging.getLogger(__name__)

REPORT_TYPES = frozenset({"report", "findings", "impression"})
"""Record ``type`` values scored as report generation (the rest are VQA)."""
REPORT_PROMPT = "Write the findings section of the radiology report for this chest X-ray."
"""Instruction used to generate the model's reports in Report Arena [inferred]."""
SNAPSHOT_MAX_PARAMS = 50_000_000
"""Models up to this size keep a copy of the initial weights to measure the update."""


def split_records(records: list[Any], test_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded train / test split; each side gets at least one record.

    Example:
        >>> tr, te = split_records(list(range(8)), 0.25, seed=0)
        >>> len(tr), len(te), sorted(tr + te) == list(range(8))
        (6, 2, True)
    """
    n = len(records)
    if n < 2:
        raise DataError(
            "DeepMedix needs at least two records (one to train, one to evaluate)",
            expected=">= 2 records",
            found=n,
            fix="add records, or use the default records (--set n_records=8)",
        )
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    test = {int(i) for i in order[:n_test]}
    return [r for i, r in enumerate(records) if i not in test], [records[i] for i in sorted(test)]


def check_records(records: list[Any], source: str) -> None:
    """Refuse records without a question or an answer (before any model is loaded)."""
    bad = [i for i, r in enumerate(records) if not str(r.answer or "").strip()]
    bad_q = [i for i, r in enumerate(records) if not str(r.question or "").strip()]
    if bad or bad_q:
        raise DataError(
            f"records without {'an answer' if bad else 'a question'} in {source}",
            expected="every record with a non-empty question and answer",
            found=f"rows {(bad or bad_q)[:10]}",
            fix="drop or complete those rows",
        )


def _snapshot(model: Any) -> dict[str, torch.Tensor] | None:
    if model_info(model)["n_params"] > SNAPSHOT_MAX_PARAMS:
        return None
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def param_change(before: dict[str, torch.Tensor] | None, model: Any) -> dict[str, float]:
    r"""Share of parameter tensors that changed and :math:`\lVert\theta_T-\theta_0\rVert_2`."""
    if before is None:
        return {}
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in model.named_parameters()
    }
    changed, sq = 0, 0.0
    for name, p0 in before.items():
        p1 = after.get(name)
        if p1 is None:
            continue
        d = p1.detach().to("cpu", torch.float32) - p0.float()
        changed += int(bool(d.abs().max() > 0))
        sq += float((d * d).sum())
    return {"frac_params_changed": changed / max(len(before), 1), "param_change_l2": sq**0.5}


@METHODS.register("deepmedix")
class DeepMedix(Learner):
    """Three-stage grounded chest X-ray reasoning model (SFT, cold start, GRPO) + Report Arena."""

    name = "deepmedix"
    config_cls = DeepMedixConfig
    description = "chest X-ray reasoning: SFT, cold-start SFT, GRPO with grounded rewards; arena"
    paper = "arXiv 2509.03906 (DeepMedix-R1)"
    status = (
        "done on tiny random models (no Qwen2.5-VL-7B weights or MIMIC data offline; no GPU run)"
    )
    demo_preset = "tiny"

    def __init__(self, config: DeepMedixConfig) -> None:
        super().__init__(config)
        self.loaded: LoadedModel | None = None
        self.model: Any = None
        self.model_dir: Path | None = None
        self.metrics: dict[str, Any] = {}
        self.log_history: list[dict[str, Any]] = []
        self._predictions: pd.DataFrame | None = None

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> list[Any]:
        """Records from ``path`` / ``config.data`` (.jsonl / .parquet), else the defaults."""
        from clinfuse.methods.deepmedix.data import default_records, load_records

        cfg = self.config
        src = path or cfg.data
        records = (
            load_records(src, allow_outside=cfg.allow_outside_paths)
            if src
            else default_records(n=cfg.n_records, seed=cfg.seed)
        )
        check_records(list(records), src or "the default records")
        return list(records)

    def _images(self, items: list[Any]) -> list[Any] | None:
        """Decoded, resized images of ``items`` (records or samples) for a VLM, else None."""
        assert self.loaded is not None
        if not self.loaded.is_vlm:
            return None
        size = self.config.image_size
        out = []
        for it in items:
            img = it.get("image") if isinstance(it, dict) else it.image
            if hasattr(img, "convert"):  # already a PIL image
                out.append(img.convert("RGB").resize((size, size)))
            else:
                out.append(load_image(img, size))
        return out

    # -- stages ---------------------------------------------------------------------------
    def _fit_sft(self, train: list[Any], run: RunDir) -> Any:
        from clinfuse.methods.deepmedix.train import sft_rows, train_sft

        assert self.loaded is not None
        rows = sft_rows([r.question for r in train], [r.answer for r in train], self._images(train))
        return train_sft(self.loaded, rows, self.config, run.path / "trainer")

    def _fit_coldstart(self, train: list[Any], run: RunDir) -> Any:
        from clinfuse.methods.deepmedix.synthetic import reasoning_samples
        from clinfuse.methods.deepmedix.train import sft_rows, train_sft

        assert self.loaded is not None
        cfg = self.config
        samples = reasoning_samples(train, seed=cfg.seed, image_size=cfg.image_size, grid=cfg.grid)
        rows = sft_rows(
            [s["prompt"] for s in samples],
            [s["completion"] for s in samples],
            self._images(samples),
        )
        atomic_write_text(
            run.path / "coldstart_samples.jsonl",
            "".join(
                json.dumps({"prompt": s["prompt"], "completion": s["completion"]}) + "\n"
                for s in samples
            ),
        )
        return train_sft(self.loaded, rows, cfg, run.path / "trainer")

    def _fit_grpo(self, train: list[Any], run: RunDir) -> Any:
        from clinfuse.methods.deepmedix.prompt import build_prompt
        from clinfuse.methods.deepmedix.rewards import make_reward_funcs
        from clinfuse.methods.deepmedix.train import train_grpo, user_turn

        assert self.loaded is not None
        cfg = self.config
        model_dir = self.model_dir
        if model_dir is None:  # no previous stage: the reference is the initial model, saved
            model_dir = save_model(self.loaded, run.path / "init_model")
        images = self._images(train)
        rows = []
        for i, r in enumerate(train):
            row: dict[str, Any] = {
                "prompt": user_turn(build_prompt(r.question), images is not None),
                "answer": r.answer,
                "boxes": [[float(v) for v in b] for b in (r.boxes or ())],
            }
            if images is not None:
                row["image"] = images[i]
            rows.append(row)
        funcs = make_reward_funcs(cfg.reward_compat, image_size=cfg.image_size)
        return train_grpo(model_dir, self.loaded, rows, funcs, cfg, run.path / "trainer")

    # -- fit ------------------------------------------------------------------------------
    def fit(self, data: list[Any], run: RunDir, *, resume: bool = False) -> DeepMedix:
        cfg = self.config
        t0 = _time.perf_counter()
        torch.manual_seed(cfg.seed)
        self.model_dir = resolve_model_dir(cfg.init) if cfg.init else None
        if cfg.stage != "sft" and cfg.init is None:
            log.warning(
                "stage %s without init: starting from %s, not a previous stage",
                cfg.stage,
                cfg.model,
            )
        self.loaded = load_model(self.model_dir or cfg.model, seed=cfg.seed)
        train, test = split_records(list(data), cfg.test_fraction, cfg.seed)
        self._images(train + test)  # undecodable images fail here, before any training step
        metrics: dict[str, Any] = {
            "stage": cfg.stage,
            "init": str(self.model_dir or cfg.model),
            "is_vlm": self.loaded.is_vlm,
            "n_train": len(train),
            "n_test": len(test),
            **{f"model/{k}": v for k, v in model_info(self.loaded.model).items()},
        }
        before = _snapshot(self.loaded.model)
        if cfg.eval_base:
            base, _ = self._evaluate(test, "base")
            metrics |= {f"base_{k}": v for k, v in base.items()}

        t1 = _time.perf_counter()
        trainer = _STAGES[cfg.stage](self, train, run)
        t_train = _time.perf_counter() - t1
        model = trainer.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        self.loaded.model = self.model = model.to(torch.float32).eval()
        metrics |= param_change(before, self.model)
        self.log_history = [dict(h) for h in trainer.state.log_history]
        metrics |= _train_summary(self.log_history)
        self.model_dir = save_model(self.loaded, run.path / "model")

        final, pred = self._evaluate(test, cfg.stage)
        metrics |= final | {
            "steps": trainer.state.global_step,
            "seconds_train": t_train,
            "seconds_total": _time.perf_counter() - t0,
        }
        self.metrics = metrics
        self._predictions = pred
        for h in self.log_history:
            if "step" in h and "loss" in h:
                nums = {k: v for k, v in h.items() if isinstance(v, int | float)}
                run.log_epoch({"epoch": h["step"], **nums})
        run.write_metrics(metrics)
        run.write_predictions(pred)
        self._write_samples(pred, run.path / "samples.jsonl")
        # best = last: the policy after the last stage is the one kept
        run.save_final_checkpoint(self.state_dict())
        self.plot(run)
        log.info(
            "deepmedix %s: reward %.3f, format %.2f, params changed %.2f in %.0f s",
            cfg.stage,
            metrics["overall"],
            metrics["format_rate"],
            metrics.get("frac_params_changed", math.nan),
            metrics["seconds_total"],
        )
        return self

    def _write_samples(self, pred: pd.DataFrame, path: Path) -> None:
        rows = pred.head(self.config.n_samples).to_dict("records")
        atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))

    # -- evaluation -----------------------------------------------------------------------
    def _evaluate(self, records: list[Any], stage: str) -> tuple[dict[str, Any], pd.DataFrame]:
        from clinfuse.methods.deepmedix.metrics import report_metrics
        from clinfuse.methods.deepmedix.prompt import build_prompt, extract_answer
        from clinfuse.methods.deepmedix.rewards import xray_score
        from clinfuse.methods.deepmedix.train import generate

        assert self.loaded is not None
        cfg = self.config
        outs = generate(
            self.loaded,
            [build_prompt(r.question) for r in records],
            self._images(records),
            cfg.max_new_tokens,
        )
        rows = []
        for r, text in zip(records, outs, strict=True):
            boxes = [list(b) for b in (r.boxes or ())] or None
            s = xray_score(
                text, r.answer, compat=cfg.reward_compat, gt_boxes=boxes, image_size=cfg.image_size
            )
            if s["format"] == 0.0:
                log.info("generation without <think>/\\boxed{} tags scored format 0: %.60r", text)
            rows.append(
                {
                    "stage": stage,
                    "type": r.type,
                    "question": r.question,
                    "answer": r.answer,
                    "generation": text,
                    "extracted": extract_answer(text),
                    **s,
                }
            )
        df = pd.DataFrame(rows)
        is_report = df["type"].str.lower().isin(REPORT_TYPES)
        metrics: dict[str, Any] = {
            "n_eval": len(df),
            "overall": float(df["overall"].mean()),
            "accuracy": float(df["accuracy"].mean()),
            "format_rate": float(df["format"].mean()),
            "coordinate": float(df["coordinate"].mean()),
            "no_format": int((df["format"] == 0).sum()),
        }
        if (~is_report).any():
            metrics["vqa_score"] = float(df.loc[~is_report, "accuracy"].mean() / 1.5)
        if is_report.any():
            rep = report_metrics(
                list(df.loc[is_report, "extracted"]), list(df.loc[is_report, "answer"])
            )
            metrics |= {f"report/{k}": float(v) for k, v in rep.items()}
        return metrics, df

    def evaluate(self, data: list[Any], split: str = "test", corrupt: str | None = None) -> dict:
        """Reward terms, VQA score and report metrics of greedy generations on a split."""
        self._require_model()
        if corrupt is not None:
            raise ConfigError(
                "deepmedix has no corruptions", expected=None, found=corrupt, fix="drop --corrupt"
            )
        metrics, self._predictions = self._evaluate(self._split(data, split), split)
        return metrics

    def _split(self, data: list[Any], split: str) -> list[Any]:
        cfg = self.config
        train, test = split_records(list(data), cfg.test_fraction, cfg.seed)
        parts = {"train": train, "test": test, "all": list(data)}
        check_split(split, parts)
        return parts[split]

    def predict(self, data: list[Any], split: str = "test") -> pd.DataFrame:
        """Generations with their extracted answers and reward terms."""
        self._require_model()
        return self._evaluate(self._split(data, split), split)[1]

    # -- Report Arena ---------------------------------------------------------------------
    def arena_reports(self) -> pd.DataFrame:
        """``study, model, report, reference`` rows: this model's reports on OPEN-I studies
        (on the packaged radiograph for a VLM) next to the reference itself (upper bound) and
        its corrupted copies (negation flipped, laterality swapped)."""
        from clinfuse.methods.deepmedix.openi import (
            CorruptionKind,
            corrupt_report,
            load_openi_reports,
        )
        from clinfuse.methods.deepmedix.train import generate

        assert self.loaded is not None
        cfg = self.config
        df = load_openi_reports(n=cfg.arena_reports)
        refs = [str(f or i) for f, i in zip(df["findings"], df["impression"], strict=True)]
        image = [load_image(None, cfg.image_size)] * len(df) if self.loaded.is_vlm else None
        own = generate(self.loaded, [REPORT_PROMPT] * len(df), image, cfg.max_new_tokens)
        rows = []
        for uid, ref, gen in zip(df["uid"], refs, own, strict=True):
            rows.append(
                {
                    "study": str(uid),
                    "model": f"deepmedix-{cfg.stage}",
                    "report": gen,
                    "reference": ref,
                }
            )
            rows.append({"study": str(uid), "model": "reference", "report": ref, "reference": ref})
            for kind in typing.get_args(CorruptionKind):
                rows.append(
                    {
                        "study": str(uid),
                        "model": f"reference+{kind}",
                        "report": corrupt_report(ref, kind),
                        "reference": ref,
                    }
                )
        return pd.DataFrame(rows)

    def arena(self, folder: str | Path) -> tuple[str, list[Path]]:
        """Run Report Arena with the judges of ``config.arena_judges``; returns the leaderboard
        (markdown) and the files written (tables and the leaderboard plot)."""
        from clinfuse.llm.arena import ScoreJudge, make_judge, run_arena
        from clinfuse.methods.deepmedix.metrics import report_score

        self._require_model()
        cfg = self.config
        cache = Path(folder) / "judge_cache"
        judges = [
            ScoreJudge(report_score, judge_id=spec)
            if spec == "local:report-score"
            else make_judge(spec, cache_dir=cache)
            for spec in (s.strip() for s in cfg.arena_judges.split(",") if s.strip())
        ]
        result = run_arena(
            self.arena_reports(), judges, n_boot=cfg.arena_boot, seed=cfg.seed, l2=cfg.arena_l2
        )
        return result.to_markdown(), result.save(folder)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the saved model folder is (the weights live there, in safetensors)."""
        self._require_model()
        return {"model_dir": str(self.model_dir), "stage": self.config.stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model_dir = resolve_model_dir(state["model_dir"])
        self.loaded = load_model(self.model_dir, seed=self.config.seed)
        self.model = self.loaded.model

    @classmethod
    def from_run(cls, run: RunDir, checkpoint: str = "best") -> DeepMedix:
        """Rebuild from ``run/config.json`` and ``run/model`` (so a moved run still loads)."""
        from clinfuse.core.config import config_from_dict

        learner = cls(config_from_dict(cls.config_cls, run.config_dict()))
        learner.load_state_dict({"model_dir": str(run.path / "model")})
        return learner

    # -- report ---------------------------------------------------------------------------
    def report_table(self) -> str:
        m = self.metrics
        keys = ["overall", "accuracy", "format_rate", "coordinate", "vqa_score"]
        lines = ["| " + " | ".join(["model", *keys]) + " |", "|" + "---|" * (len(keys) + 1)]
        for label, prefix in (("base", "base_"), (m.get("stage", "final"), "")):
            if f"{prefix}overall" not in m:
                continue
            cells = [f"{float(m[prefix + k]):.4f}" if prefix + k in m else "" for k in keys]
            lines.append("| " + " | ".join([str(label), *cells]) + " |")
        return "\n".join(lines) if len(lines) > 2 else ""

    def plot(self, run: RunDir) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        hist = [h for h in self.log_history if "loss" in h and "step" in h]
        if not hist:
            return []
        keys = [k for k in ("loss", "reward", "kl") if any(k in h for h in hist)]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.0), squeeze=False)
        for ax, k in zip(axes[0], keys, strict=True):
            pts = [(h["step"], h[k]) for h in hist if k in h]
            ax.plot(*zip(*pts, strict=True), "o-")
            ax.set_xlabel("optimiser step")
            ax.set_title(k)
        fig.suptitle(f"deepmedix stage {self.config.stage}")
        path = run.plots / f"training_{self.config.stage}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        return [path]

    def demo(self, data: list[Any], run: RunDir) -> DemoResult:
        m = run.read_metrics() or self.metrics
        return DemoResult(
            system=f"deepmedix ({m.get('stage')}, {self.config.model})",
            data=f"{len(data)} records on the pydicom-data radiograph",
            metric="test mean reward (overall)",
            value=float(m["overall"]),
            baseline="before training",
            baseline_value=float(m.get("base_overall", math.nan)),
            extra={
                k: float(m[k])
                for k in ("format_rate", "accuracy", "frac_params_changed", "param_change_l2")
                if k in m
            },
            plots=sorted(run.plots.glob("*.png")),
            notes="random tiny model: checks the pipeline, its scores mean nothing",
        )


def _train_summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """First / last training loss and (GRPO) reward and KL from the trainer's log."""
    out: dict[str, float] = {}
    for key in ("loss", "reward", "kl"):
        vals = [float(h[key]) for h in history if key in h and "train_runtime" not in h]
        if vals:
            out[f"train_{key}_first"], out[f"train_{key}_last"] = vals[0], vals[-1]
    return out


_STAGES = {
    "sft": DeepMedix._fit_sft,
    "coldstart": DeepMedix._fit_coldstart,
    "grpo": DeepMedix._fit_grpo,
}
