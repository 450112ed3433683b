r"""ehrprompt as a clinfuse learner: ``clinfuse fit | evaluate | predict ehrprompt``.

1. Every cell of the table becomes a sentence (:func:`~.prompts.render`: the column's template,
   numbers with units, "not recorded" for missing cells, notes as text cells scrubbed of outcome
   phrases). The sentence encoder embeds each *distinct* sentence once, through the on-disk
   :class:`~.encoders.EmbeddingCache`, so later epochs, corruption sweeps and reruns never encode
   a sentence twice; rows keep only indices into the table of distinct embeddings.
2. :class:`~.model.PromptTransformer` ([CLS] + cell embeddings + column-id embeddings, a
   transformer encoder, one head per task) is trained with early stopping on a validation part
   of the training rows (checkpointed every epoch; ``--resume`` continues).
3. On the test rows: BACC / AUROC (classification), RMSE / MAE (regression), for the model and for
   logistic/ridge and gradient-boosting baselines on the raw table, and the robustness curves:
   structured test cells masked or resampled from the training marginal at each rate, with
   bootstrap confidence intervals.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.learner import METHODS, DemoResult, Learner, check_split
from clinfuse.core.loop import fit_loop
from clinfuse.core.runs import RunDir, atomic_path, atomic_write_text
from clinfuse.methods.ehrprompt.config import EHRPromptConfig
from clinfuse.methods.ehrprompt.data import EHRTable
from clinfuse.metrics.classification import balanced_accuracy, roc_auc
from clinfuse.metrics.regression import mae, rmse

log = logging.getLogger(__name__)

__all__ = ["EHRPrompt", "EHRData"]


@dataclass
class EHRData:
    """The table, its split (row positions) and the templates in use."""

    table: EHRTable
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    templates: Any

    @property
    def name(self) -> str:
        return self.table.name


def _cache_root(cfg: EHRPromptConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    base = os.environ.get("CLINFUSE_CACHE") or Path.home() / ".cache" / "clinfuse"
    return Path(base) / "embeddings"


def _split(table: EHRTable, cfg: EHRPromptConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit, valid, test) row positions: the table's fixed split, else ``test_fraction`` held
    out; the validation rows come from the training part. Both cuts are stratified on the first
    classification target and keep a subject's rows on one side (``meta["rows"]["group"]``)."""
    from clinfuse.methods.ehrprompt.tables import stratified_split

    first = next(iter(table.tasks), None)
    y = table.target_codes(first) if first and table.tasks[first] == "classification" else None
    rows_meta = table.meta.get("rows") if isinstance(table.meta.get("rows"), dict) else {}
    groups = rows_meta.get("group")
    if table.split is not None:
        train, test = (np.asarray(p, dtype=np.int64) for p in table.split)
    else:
        train, test = stratified_split(
            y, groups, cfg.test_fraction, cfg.seed, rows=np.arange(table.n_rows)
        )
    if cfg.max_rows is not None:
        train, test = train[: cfg.max_rows], test[: max(20, cfg.max_rows // 4)]
    fit, valid = stratified_split(y, groups, cfg.valid_fraction, cfg.seed + 1, rows=train)
    return fit, valid, test


@METHODS.register("ehrprompt")
class EHRPrompt(Learner):
    """Prompt sentences + frozen sentence encoder + transformer fusion for EHR prediction."""

    name = "ehrprompt"
    config_cls = EHRPromptConfig
    description = "multimodal EHR prediction from prompt sentences and notes"
    paper = "arXiv 2508.20460 (Ruan, Lan, Tan, Abdullah, Feng; P-Transformer 2303.17408)"
    status = "done (SUPPORT2 real data; MIMIC cohorts tested on a synthetic schema)"

    def __init__(self, config: EHRPromptConfig) -> None:
        super().__init__(config)
        self.model: Any = None
        self.columns: list[str] = []
        self.tasks: dict[str, str] = {}
        self.target_scale: dict[str, tuple[float, float]] = {}
        self.deciles: dict[str, np.ndarray] | None = None
        self.table: pd.DataFrame | None = None
        self.curves: pd.DataFrame | None = None
        self._encoder: Any = None
        self._baseline_models: dict[tuple[str, str], Any] = {}
        self._matrix: Any = None
        self.thresholds: dict[str, float] = {}
        self.value_edges: dict[str, np.ndarray] = {}
        self.paths: dict[str, Any] = {}
        self.n_tabular = 0
        self.baseline_params: dict[str, dict[str, Any]] = {}
        self.blend_weights: dict[str, float] = {}
        self._lora: Any = None  # the tuned encoder (encoder_lora_rank > 0), after training
        self._lora_state: dict[str, torch.Tensor] | None = None
        self._tuned: dict[str, np.ndarray] = {}  # sentence -> tuned embedding (memo)

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> EHRData:
        from clinfuse.methods.ehrprompt import data as ehr_data
        from clinfuse.methods.ehrprompt import prompts

        cfg = self.config
        source = path or cfg.data
        loaders = {
            "support2": ehr_data.load_support2,
            "synthetic": lambda: _synthetic("ehr", cfg.seed),
            "surgical": lambda: _synthetic("surgical", cfg.seed),
        }
        templates = None
        if source in loaders:
            table = loaders[source]()
        elif Path(source).suffix.lower() in (".csv", ".tsv", ".parquet", ".arff"):
            from clinfuse.methods.ehrprompt.tables import load_user_table

            table, templates, _ = load_user_table(
                source,
                target=cfg.target,
                task=cfg.task,
                id_col=cfg.id,
                time_col=cfg.time,
                baseline=cfg.baseline,
                dictionary=cfg.dictionary,
                drop=cfg.drop,
                allow_leaky=cfg.allow_leaky,
                encoding=cfg.encoding,
                on_bad_value=cfg.on_bad_value,
            )
        elif source.startswith(("mimic-iv:", "mimic-iii:")):
            from clinfuse.methods.ehrprompt.mimic import build_mimic_cohort

            version, root = source.split(":", 1)
            table = build_mimic_cohort(root, version=version.split("-")[1])
        else:
            raise DataError(
                f"unknown ehrprompt data {source!r}",
                expected="support2, synthetic, surgical, mimic-iv:<root>, mimic-iii:<root>, or "
                "a table file (.csv, .parquet, .arff)",
                found=source,
                fix="--data TABLE.csv --set target=COLUMN, or --set data=support2",
            )
        if cfg.targets:
            unknown = [t for t in cfg.targets if t not in table.tasks]
            if unknown:
                raise ConfigError(
                    f"unknown targets {unknown}", expected=sorted(table.tasks), found=cfg.targets
                )
        if not cfg.use_notes and table.note_columns:
            table = table.drop_columns(list(table.note_columns))
        table.validate()
        if cfg.templates:
            templates = prompts.TemplateSet.from_yaml(cfg.templates)
        elif source == "support2":
            templates = prompts.support2_templates()
        elif templates is None:
            templates = prompts.auto_templates(table.frame, list(table.specs))
        templates = templates.select(list(table.frame.columns))
        fit, valid, test = _split(table, cfg)
        return EHRData(table, fit, valid, test, templates)

    # -- sentences and embeddings ---------------------------------------------------------
    def encoder(self) -> Any:
        """The cached sentence encoder (built once)."""
        if self._encoder is None:
            from clinfuse.methods.ehrprompt.encoders import EmbeddingCache, make_encoder

            cfg = self.config
            self._encoder = EmbeddingCache(_cache_root(cfg), make_encoder(cfg.encoder))
        return self._encoder

    def sentences(self, data: EHRData, frame: pd.DataFrame) -> np.ndarray:
        """``(n, m)`` sentences of ``frame`` (training deciles when ``numeric = decile``)."""
        from clinfuse.methods.ehrprompt import prompts

        cfg = self.config
        if cfg.numeric == "decile" and self.deciles is None:
            self.deciles = prompts.fit_deciles(data.table.frame.iloc[data.train], data.templates)
        return prompts.render(
            frame[self.columns or list(data.templates.names)],
            data.templates,
            mode=cfg.prompt_mode,
            numeric=cfg.numeric,
            deciles=self.deciles,
            on_bad_value="skip" if cfg.on_bad_value == "skip" else "raise",
        )

    def lora(self) -> Any:
        """The LoRA-tuned encoder (:class:`~.encoders.TopLoRA`) of ``encoder_lora_rank``."""
        if self._lora is None:
            from clinfuse.methods.ehrprompt.encoders import TopLoRA

            cfg = self.config
            self._lora = TopLoRA(
                self.encoder().encoder, cfg.encoder_lora_rank, cfg.encoder_lora_alpha, cfg.seed
            )
            if self._lora_state is not None:
                self._lora.module.load_state_dict(self._lora_state)
        return self._lora

    def _tuned_embeddings(self, texts: list[str]) -> np.ndarray:
        """Embeddings from the trained LoRA encoder, each sentence encoded once (memo)."""
        new = [t for t in texts if t not in self._tuned]
        if new:
            z = self.lora().encode(new, batch_size=self.config.encoder_batch)
            self._tuned.update(zip(new, z, strict=True))
        return np.stack([self._tuned[t] for t in texts]) if texts else np.zeros((0, 1))

    def embed(self, sentences: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Distinct-sentence embeddings ``(u, d)`` and the ``(n, m)`` index into them (from the
        LoRA-tuned encoder once it is trained)."""
        uniq, inverse = np.unique(sentences.astype(str), return_inverse=True)
        if self.config.encoder_lora_rank and (self._lora_state is not None):
            emb = self._tuned_embeddings(list(uniq))
        else:
            emb = self.encoder().encode(list(uniq), batch_size=self.config.encoder_batch)
        return torch.as_tensor(emb, dtype=torch.float32), torch.as_tensor(
            inverse.reshape(sentences.shape), dtype=torch.long
        )

    # -- targets --------------------------------------------------------------------------
    def _targets(self, data: EHRData, rows: np.ndarray) -> dict[str, torch.Tensor]:
        out = {}
        for name, kind in self.tasks.items():
            if kind == "classification":
                out[name] = torch.as_tensor(data.table.target_codes(name)[rows], dtype=torch.long)
            else:
                mean, sd = self.target_scale[name]
                y = np.asarray(data.table.targets[name], dtype=np.float64)[rows]
                out[name] = torch.as_tensor((y - mean) / sd, dtype=torch.float32)
        return out

    # -- training -------------------------------------------------------------------------
    def fit(self, data: EHRData, run: RunDir, *, resume: bool = False) -> EHRPrompt:
        from clinfuse.methods.ehrprompt.model import (
            PromptTransformer,
            multitask_loss,
        )

        cfg = self.config
        torch.manual_seed(cfg.seed)
        table = data.table
        self.columns = list(data.templates.names)
        self.tasks = {t: k for t, k in table.tasks.items() if not cfg.targets or t in cfg.targets}
        for name, kind in self.tasks.items():
            if kind == "regression":
                y = np.asarray(table.targets[name], dtype=np.float64)[data.train]
                self.target_scale[name] = (float(y.mean()), float(y.std() or 1.0))
            elif len(table.classes[name]) == 2:  # decide at the training prevalence (BACC)
                self.thresholds[name] = float(table.target_codes(name)[data.train].mean())
        t0 = time.perf_counter()
        sents = self.sentences(data, table.frame)
        t_render = time.perf_counter() - t0
        emb, index = self.embed(sents)
        stats = self.encoder().stats
        t_embed = time.perf_counter() - t0 - t_render
        n_classes = {
            t: len(table.classes[t]) for t, k in self.tasks.items() if k == "classification"
        }
        side = self._fit_paths(data)
        self.model = PromptTransformer(
            emb.shape[1], len(self.columns), self.tasks, n_classes, self._arch()
        )
        model = self.model
        targets = self._targets(data, np.arange(table.n_rows))
        keep = 1.0 - cfg.column_dropout
        lora = None
        if cfg.encoder_lora_rank:  # partial fine-tuning: the distinct sentences' frozen part
            self._lora_state, self._tuned = None, {}
            lora = self.lora()
            lora.cache(list(np.unique(sents.astype(str))), batch_size=cfg.encoder_batch)
            trained: torch.nn.Module = _WithLoRA(model, lora.module)
        else:
            trained = model

        def cells(rows: torch.Tensor) -> torch.Tensor:
            idx = index[rows]
            if lora is None:
                return emb[idx]
            ids, inv = torch.unique(idx, return_inverse=True)
            return lora(ids)[inv]

        def inputs(rows: torch.Tensor, train: bool) -> dict[str, Any]:
            kw: dict[str, Any] = {k: v[rows] for k, v in side.items() if k != "offset"}
            if "offset" in side:
                kw["offset"] = {t: o[rows] for t, o in side["offset"].items()}
            if train and cfg.column_dropout > 0:
                mask = torch.rand(len(rows), len(self.columns), generator=gen) < keep
                mask[mask.sum(1) == 0, 0] = True  # never hide every cell of a row
                kw["cell_mask"] = mask
            return kw

        optimizer = torch.optim.AdamW(
            trained.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        gen = torch.Generator().manual_seed(cfg.seed)
        fit_rows = torch.as_tensor(data.train)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(fit_rows),
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=gen,
        )

        def step(m: torch.nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict]:
            (rows,) = batch
            out = m(cells(rows), **inputs(rows, True))
            loss = multitask_loss(
                out,
                {k: v[rows] for k, v in targets.items()},
                self.tasks,
                regression_loss=cfg.regression_loss,
            )
            return loss, {}

        valid_rows = torch.as_tensor(data.valid)

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            with torch.no_grad():
                out = m(cells(valid_rows), **inputs(valid_rows, False))
                loss = multitask_loss(
                    out,
                    {k: v[valid_rows] for k, v in targets.items()},
                    self.tasks,
                    regression_loss=cfg.regression_loss,
                )
            return {"loss": float(loss)}

        t1 = time.perf_counter()
        result = fit_loop(
            model=trained,
            optimizer=optimizer,
            train_loader=loader,
            step_fn=step,
            eval_fn=evaluate,
            run=run,
            epochs=cfg.epochs,
            monitor="loss",
            mode="min",
            patience=cfg.patience or None,
            grad_clip=1.0,
            progress=cfg.progress,
            resume=resume,
            extra_state=lambda: {"columns": list(self.columns)},
        )
        t_train = time.perf_counter() - t1
        self._write_inputs(data, run)
        trained.load_state_dict(run.load_checkpoint("best")["model"])
        model.eval()
        if lora is not None:
            self._lora_state = {k: v.detach().clone() for k, v in lora.module.state_dict().items()}
            self._tuned = {}
        # validation scores (for choosing settings) before the linear path sees those rows
        if cfg.linear_path == "blend":
            valid_preds = self._fit_blend(data)
            valid = {
                f"valid_{k}": v for k, v in self._scores(data, data.valid, valid_preds).items()
            }
            valid.update({f"blend_weight_{t}": w for t, w in self.blend_weights.items()})
        else:
            valid = {f"valid_{k}": v for k, v in self.evaluate(data, "valid").items()}
        self._refit_paths(data)  # the linear path's final model sees the validation rows too
        run.save_checkpoint(
            "best",
            {**run.load_checkpoint("best"), "model": model.state_dict(), **self._extra_state()},
        )
        metrics: dict[str, Any] = {
            "data": data.name,
            "n_train": int(len(data.train)),
            "n_valid": int(len(data.valid)),
            "n_test": int(len(data.test)),
            "n_columns": len(self.columns),
            "distinct_sentences": int(emb.shape[0]),
            "cells": int(index.numel()),
            "seconds_render": t_render,
            "seconds_embed": t_embed,
            "cache_hits": int(stats.hits),
            "cache_misses": int(stats.misses),
            "seconds_train": t_train,
            "seconds_per_epoch": t_train / max(1, len(result.history)),
            "best_epoch": result.best_epoch,
            "encoder": getattr(self.encoder(), "model_id", cfg.encoder),
        }
        metrics.update(valid)
        self._fit_baselines(data)
        metrics["baseline_params"] = self.baseline_params
        metrics.update(self._report(data, run))
        run.write_metrics(metrics)
        run.write_predictions(self.predict(data, "test"))
        self.plot(run)
        log.info("ehrprompt run written to %s", run.path)
        return self

    # -- numeric and linear paths ------------------------------------------------------------
    def _arch(self) -> Any:
        from clinfuse.methods.ehrprompt.model import PromptTransformerConfig

        cfg = self.config
        return PromptTransformerConfig(
            d_model=cfg.d_model,
            layers=cfg.layers,
            heads=cfg.heads,
            ff=2 * cfg.d_model,
            dropout=cfg.dropout,
            value_bins=cfg.value_bins if cfg.value_encoding == "ple" else 0,
            tabular_features=self.n_tabular if cfg.linear_path == "joint" else 0,
        )

    def _numeric_columns(self, data: EHRData) -> list[str]:
        return [c for c in self.columns if data.templates[c].kind == "numeric"]

    def _path_target(self, data: EHRData, task: str, t: str, rows: np.ndarray) -> np.ndarray:
        if task == "classification":
            return data.table.target_codes(t)[rows]
        mean, sd = self.target_scale[t]
        return (np.asarray(data.table.targets[t], dtype=float)[rows] - mean) / sd

    def _fit_paths(self, data: EHRData) -> dict[str, Any]:
        """Per-row side inputs of the fusion model for every row of the table: value encodings,
        the standardised raw matrix (joint) and the linear model's offsets (offset; cross-fitted
        on the training rows, from the training-row model elsewhere)."""
        from clinfuse.methods.ehrprompt.numeric import LinearPath, fit_value_edges, value_tensor

        cfg, frame = self.config, data.table.frame
        side: dict[str, Any] = {}
        if cfg.value_encoding == "ple":
            self.value_edges = fit_value_edges(
                frame.iloc[data.train], self.columns, self._numeric_columns(data), cfg.value_bins
            )
            side["values"] = value_tensor(frame, self.columns, self.value_edges, cfg.value_bins)
        if cfg.linear_path == "none":
            return side
        specs = [s for s in data.table.specs if s.name in self.columns]
        self.paths = {t: LinearPath(specs, k, seed=cfg.seed) for t, k in self.tasks.items()}
        fit_frame = frame.iloc[data.train]
        offsets = {}
        for t, k in self.tasks.items():
            path = self.paths[t]
            oof = path.fit(fit_frame, self._path_target(data, k, t, data.train))
            full = path.outputs(frame)
            full[data.train] = oof
            offsets[t] = torch.as_tensor(full, dtype=torch.float32)
        if cfg.linear_path == "offset":
            side["offset"] = offsets
        elif cfg.linear_path == "blend":
            pass  # mixed with the transformer's outputs after training (_fit_blend)
        else:
            matrix = next(iter(self.paths.values())).matrix(frame)
            self.n_tabular = matrix.shape[1]
            side["tabular"] = torch.as_tensor(matrix, dtype=torch.float32)
        return side

    def _refit_paths(self, data: EHRData) -> None:
        if self.config.linear_path == "none":
            return
        rows = np.concatenate([data.train, data.valid])
        for t, k in self.tasks.items():
            self.paths[t].refit(data.table.frame.iloc[rows], self._path_target(data, k, t, rows))

    def _side(self, data: EHRData, frame: pd.DataFrame) -> dict[str, Any]:
        """Side inputs of the rows of ``frame`` at prediction time."""
        from clinfuse.methods.ehrprompt.numeric import value_tensor

        cfg = self.config
        side: dict[str, Any] = {}
        if cfg.value_encoding == "ple":
            side["values"] = value_tensor(frame, self.columns, self.value_edges, cfg.value_bins)
        if cfg.linear_path == "none":
            return side
        if not self.paths:  # a reloaded run: refit the linear path on the same training rows
            self._fit_paths(data)
            self._refit_paths(data)
        if cfg.linear_path == "offset":
            side["offset"] = {
                t: torch.as_tensor(p.outputs(frame), dtype=torch.float32)
                for t, p in self.paths.items()
            }
        elif cfg.linear_path == "blend":
            pass
        else:
            matrix = next(iter(self.paths.values())).matrix(frame)
            side["tabular"] = torch.as_tensor(matrix, dtype=torch.float32)
        return side

    def _write_inputs(self, data: EHRData, run: RunDir) -> None:
        """``templates.yaml`` (the templates in use), ``table_report.json`` (a table file's read
        decisions) and ``example_sentences.txt`` (the first training row, rendered)."""
        from clinfuse.core.runs import atomic_write_json

        data.templates.to_yaml(run.path / "templates.yaml")
        report = data.table.meta.get("table_report")
        if report is not None:
            atomic_write_json(run.path / "table_report.json", report)
        first = data.table.frame.iloc[data.train[:1]]
        lines = [str(s) for s in self.sentences(data, first)[0]]
        atomic_write_text(run.path / "example_sentences.txt", "\n".join(lines) + "\n")

    def _extra_state(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "tasks": dict(self.tasks),
            "target_scale": {k: list(v) for k, v in self.target_scale.items()},
            "thresholds": dict(self.thresholds),
            "d_enc": int(self.model.d_enc),
            "n_classes": dict(self.model.n_classes),
            "deciles": None
            if self.deciles is None
            else {k: torch.as_tensor(v) for k, v in self.deciles.items()},
            "value_edges": {k: torch.as_tensor(v) for k, v in self.value_edges.items()},
            "n_tabular": int(self.n_tabular),
            "blend_weights": dict(self.blend_weights),
            "encoder_lora": self._lora_state,
        }

    # -- prediction -----------------------------------------------------------------------
    def _raw_outputs(self, data: EHRData, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per task: the fusion model's class log-probabilities ``(n, C)`` or standardised value
        ``(n,)`` (the linear offset included when ``linear_path = offset``)."""
        model = self._require_model()
        emb, index = self.embed(self.sentences(data, frame))
        side = self._side(data, frame)
        out: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        with torch.no_grad():
            for start in range(0, len(index), 1024):
                part = slice(start, start + 1024)
                kw: dict[str, Any] = {k: v[part] for k, v in side.items() if k != "offset"}
                if "offset" in side:
                    kw["offset"] = {t: o[part] for t, o in side["offset"].items()}
                res = model(emb[index[part]], **kw)
                for t, kind in self.tasks.items():
                    o = torch.log_softmax(res[t], dim=1) if kind == "classification" else res[t]
                    out[t].append(o.numpy())
        return {t: np.concatenate(v) for t, v in out.items()}

    def _linear_raw(self, data: EHRData, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The linear path's log-probabilities / standardised values of the rows of ``frame``."""
        if not self.paths:  # a reloaded run: refit the linear path on the same training rows
            self._fit_paths(data)
            self._refit_paths(data)
        return {t: np.asarray(p.outputs(frame), dtype=np.float64) for t, p in self.paths.items()}

    def _finish(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs -> positive-class probability (binary), class probabilities, or value."""
        out = {}
        for t, kind in self.tasks.items():
            if kind == "classification":
                p = torch.softmax(torch.as_tensor(raw[t], dtype=torch.float64), dim=1).numpy()
                out[t] = p[:, 1] if p.shape[1] == 2 else p
            else:
                mean, sd = self.target_scale[t]
                out[t] = raw[t] * sd + mean
        return out

    @staticmethod
    def _mix(w: float, linear: np.ndarray, model: np.ndarray) -> np.ndarray:
        return w * linear + (1.0 - w) * model

    def _blend_loss(self, t: str, raw: np.ndarray, y: np.ndarray) -> float:
        """Validation loss of mixed outputs: cross-entropy of the renormalised mixture of
        log-probabilities, or the squared error on the standardised scale."""
        if self.tasks[t] == "classification":
            logp = torch.log_softmax(torch.as_tensor(raw, dtype=torch.float64), dim=1).numpy()
            return float(-logp[np.arange(len(y)), y].mean())
        return float(np.mean((raw - y) ** 2))

    def _choose_weight(self, t: str, lin: np.ndarray, mod: np.ndarray, y: np.ndarray) -> float:
        grid = np.linspace(0.0, 1.0, self.config.blend_grid + 1)
        losses = [self._blend_loss(t, self._mix(w, lin, mod), y) for w in grid]
        return float(grid[int(np.argmin(losses))])

    def _fit_blend(self, data: EHRData) -> dict[str, np.ndarray]:
        """Choose each task's mixing weight ``w`` on the validation rows (the linear path is
        still the training-row model here, so it has not seen them). Returns the validation
        predictions with *cross-fitted* weights (each half of the validation rows scored with the
        weight chosen on the other half), so the reported validation score, which chooses among
        settings, is not flattered by the weight's own fit."""
        from clinfuse.methods.ehrprompt.tables import stratified_split

        frame = data.table.frame.iloc[data.valid]
        mod, lin = self._raw_outputs(data, frame), self._linear_raw(data, frame)
        n = len(data.valid)
        first = next(iter(self.tasks))
        codes = (
            data.table.target_codes(first)[data.valid]
            if self.tasks[first] == "classification"
            else None
        )
        a, b = stratified_split(codes, None, 0.5, self.config.seed + 2, rows=np.arange(n))
        raw = {}
        for t, kind in self.tasks.items():
            y = self._path_target(data, kind, t, data.valid)
            if kind == "classification":
                y = y.astype(np.int64)
                keep = y >= 0
            else:
                keep = np.isfinite(y)
            self.blend_weights[t] = self._choose_weight(t, lin[t][keep], mod[t][keep], y[keep])
            mixed = np.empty_like(mod[t])
            for fit_half, score_half in ((a, b), (b, a)):
                k = fit_half[keep[fit_half]]
                w = self._choose_weight(t, lin[t][k], mod[t][k], y[k])
                mixed[score_half] = self._mix(w, lin[t][score_half], mod[t][score_half])
            raw[t] = mixed
        return self._finish(raw)

    def _outputs(self, data: EHRData, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per task: positive-class probability (binary), class probabilities, or the value."""
        raw = self._raw_outputs(data, frame)
        if self.config.linear_path == "blend":
            lin = self._linear_raw(data, frame)
            raw = {t: self._mix(self.blend_weights[t], lin[t], raw[t]) for t in raw}
        return self._finish(raw)

    def _scores(
        self,
        data: EHRData,
        rows: np.ndarray,
        preds: dict[str, np.ndarray],
        system: str = "ehrprompt",
    ) -> dict:
        """Test metrics. ehrprompt's binary decisions use the training prevalence as threshold
        (the baselines are fitted with balanced class weights and use 0.5) [inferred]."""
        table, scores = data.table, {}
        for t, kind in self.tasks.items():
            y = np.asarray(table.targets[t])[rows]
            if kind == "classification":
                codes = table.target_codes(t)[rows]
                p = preds[t]
                scores[f"{t}_auroc"] = roc_auc(p, codes) if p.ndim == 1 else float("nan")
                cut = self.thresholds.get(t, 0.5) if system == "ehrprompt" else 0.5
                label = (p >= cut).astype(int) if p.ndim == 1 else p.argmax(1)
                scores[f"{t}_bacc"] = balanced_accuracy(label, codes)
            else:
                scores[f"{t}_rmse"] = rmse(preds[t], y.astype(float))
                scores[f"{t}_mae"] = mae(preds[t], y.astype(float))
        return scores

    def evaluate(self, data: EHRData, split: str = "test", corrupt: str | None = None) -> dict:
        parts = {"train": data.train, "valid": data.valid, "test": data.test}
        rows = parts[check_split(split, parts)]
        frame = data.table.frame.iloc[rows]
        if corrupt is not None:
            frame = self._corrupt(data, frame, *_parse_corrupt(corrupt))
        return self._scores(data, rows, self._outputs(data, frame))

    def predict(self, data: EHRData, split: str = "test") -> pd.DataFrame:
        parts = {"train": data.train, "valid": data.valid, "test": data.test}
        rows = parts[check_split(split, parts)]
        preds = self._outputs(data, data.table.frame.iloc[rows])
        df = pd.DataFrame({"row": rows})
        for t in self.tasks:
            df[f"{t}_true"] = np.asarray(data.table.targets[t])[rows]
            p = preds[t]
            df[f"{t}_pred"] = p if p.ndim == 1 else p.argmax(1)
        return df

    # -- baselines and robustness ---------------------------------------------------------
    def _structured(self, data: EHRData) -> list[str]:
        return [c for c in self.columns if c not in data.table.note_columns]

    def _fit_baselines(self, data: EHRData) -> None:
        """Baselines on the raw table, fitted on the training and validation rows; with
        ``tune_baselines``, their settings are chosen on the validation rows first
        (:func:`~.baselines.tune_baseline`)."""
        from clinfuse.methods.ehrprompt.baselines import fit_baseline, tabular_matrix, tune_baseline

        frame = data.table.frame
        train = np.concatenate([data.train, data.valid])
        x_train, self._matrix = tabular_matrix(
            frame.iloc[train], list(data.table.specs), fit_on=frame.iloc[train]
        )
        n_fit = len(data.train)
        self.baseline_params = {}
        for kind in self.config.baselines:
            for t, task in self.tasks.items():
                y = (
                    data.table.target_codes(t)
                    if task == "classification"
                    else np.asarray(data.table.targets[t], dtype=float)
                )[train]
                if self.config.tune_baselines:
                    model, params, _ = tune_baseline(
                        kind,
                        task,
                        x_train[:n_fit],
                        y[:n_fit],
                        x_train[n_fit:],
                        y[n_fit:],
                        seed=self.config.seed,
                    )
                    self.baseline_params[f"{kind}_{t}"] = params
                else:
                    model = fit_baseline(kind, task, x_train, y, seed=self.config.seed)
                self._baseline_models[(kind, t)] = model

    def _baseline_outputs(self, data: EHRData, frame: pd.DataFrame, kind: str) -> dict:
        from clinfuse.methods.ehrprompt.baselines import predict

        x = self._matrix.transform(frame)
        return {t: predict(self._baseline_models[(kind, t)], x) for t in self.tasks}

    def _corrupt(
        self, data: EHRData, frame: pd.DataFrame, mode: str, rate: float, seed: int = 0
    ) -> pd.DataFrame:
        from clinfuse.robustness.tables import corrupt_cells

        reference = data.table.frame.iloc[data.train]
        out, _ = corrupt_cells(
            frame,
            rate,
            mode,
            self._structured(data),
            np.random.default_rng(seed),
            reference=reference,
        )
        return out

    def _report(self, data: EHRData, run: RunDir | None) -> dict[str, float]:
        from clinfuse.metrics.bootstrap import bootstrap_ci

        cfg = self.config
        table, rows = data.table, data.test
        frame = table.frame.iloc[rows]
        systems = ["ehrprompt", *cfg.baselines]
        clean = {"ehrprompt": self._outputs(data, frame)}
        for kind in cfg.baselines:
            clean[kind] = self._baseline_outputs(data, frame, kind)
        comparison = [{"model": s, **self._scores(data, rows, clean[s], s)} for s in systems]
        self.table = pd.DataFrame(comparison)
        main = next(iter(self.tasks))
        metric = f"{main}_auroc" if self.tasks[main] == "classification" else f"{main}_mae"
        y_main = (
            table.target_codes(main)
            if self.tasks[main] == "classification"
            else np.asarray(table.targets[main], dtype=float)
        )[rows]
        fn = roc_auc if metric.endswith("auroc") else mae
        curves = []
        for mode in cfg.corruption_modes:
            for rate in cfg.corruption_rates:
                bad = self._corrupt(data, frame, mode, rate, seed=cfg.seed) if rate > 0 else frame
                outs = {"ehrprompt": self._outputs(data, bad)}
                for kind in cfg.baselines:
                    outs[kind] = self._baseline_outputs(data, bad, kind)
                for s in systems:
                    pred = outs[s][main]
                    low, high = bootstrap_ci(fn, y_main, pred, n_boot=cfg.n_boot, seed=cfg.seed)
                    curves.append(
                        {
                            "mode": mode,
                            "rate": rate,
                            "model": s,
                            "metric": metric,
                            "value": float(fn(pred, y_main)),
                            "ci_low": low,
                            "ci_high": high,
                        }
                    )
        self.curves = pd.DataFrame(curves)
        if run is not None:
            self.table.to_csv(run.path / "comparison_test.csv", index=False)
            self.curves.to_csv(run.path / "robustness.csv", index=False)
        flat: dict[str, float] = {}
        for r in comparison:
            for k, v in r.items():
                if k != "model":
                    flat[f"test_{k}" if r["model"] == "ehrprompt" else f"test_{r['model']}_{k}"] = v
        return flat

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self._require_model().state_dict(), **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from clinfuse.methods.ehrprompt.model import PromptTransformer

        self.columns = list(state["columns"])
        self.tasks = dict(state["tasks"])
        self.target_scale = {
            k: (float(v[0]), float(v[1])) for k, v in state["target_scale"].items()
        }
        self.thresholds = {k: float(v) for k, v in state.get("thresholds", {}).items()}
        if state.get("deciles"):
            self.deciles = {k: v.numpy() for k, v in state["deciles"].items()}
        self.value_edges = {k: v.numpy() for k, v in state.get("value_edges", {}).items()}
        self.n_tabular = int(state.get("n_tabular", 0))
        self.blend_weights = {k: float(v) for k, v in state.get("blend_weights", {}).items()}
        self._lora_state = state.get("encoder_lora")
        self._lora, self._tuned = None, {}
        self.model = PromptTransformer(
            int(state["d_enc"]),
            len(self.columns),
            self.tasks,
            dict(state["n_classes"]),
            self._arch(),
        )
        self.model.load_state_dict(state["model"])
        self.model.eval()

    # -- report ---------------------------------------------------------------------------
    def report_table(self) -> str:
        if self.table is None:
            return ""
        cols = list(self.table.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for _, r in self.table.iterrows():
            cells = [str(r["model"])] + [f"{r[c]:.4f}" for c in cols[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_report(self, folder: str | Path) -> list[Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [atomic_write_text(folder / "comparison.md", self.report_table() + "\n")]

    def plot(self, run: RunDir) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if self.curves is None or self.curves.empty:
            return []
        out = []
        modes = list(dict.fromkeys(self.curves["mode"]))
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.6), squeeze=False)
        for ax, mode in zip(axes[0], modes, strict=True):
            sub = self.curves[self.curves["mode"] == mode]
            for model, g in sub.groupby("model", sort=False):
                ax.plot(g["rate"], g["value"], marker="o", label=model)
                ax.fill_between(g["rate"], g["ci_low"], g["ci_high"], alpha=0.15)
            ax.set_xlabel("share of structured test cells corrupted")
            ax.set_ylabel(sub["metric"].iloc[0])
            ax.set_title(f"corruption: {mode}")
            ax.legend(fontsize=8, loc="lower left")  # "best" searches every polygon: slow
        fig.tight_layout()
        path = run.plots / "robustness.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        out.append(path)
        return out

    def demo(self, data: EHRData, run: RunDir) -> DemoResult:
        assert self.table is not None
        by = self.table.set_index("model")
        main = next(iter(self.tasks))
        metric = f"{main}_auroc" if self.tasks[main] == "classification" else f"{main}_mae"
        base = "linear" if "linear" in by.index else by.index[-1]
        return DemoResult(
            system="ehrprompt",
            data=f"{data.name} ({len(data.train) + len(data.valid)} train rows)",
            metric=f"test {metric}",
            value=float(by.loc["ehrprompt", metric]),
            baseline=base,
            baseline_value=float(by.loc[base, metric]),
            higher_is_better=metric.endswith("auroc"),
            extra={k: float(v) for k, v in by.loc["ehrprompt"].items()},
            plots=sorted(run.plots.glob("*.png")),
        )


class _WithLoRA(torch.nn.Module):
    """The fusion model and the encoder's LoRA weights as one trained (and checkpointed) module;
    the cell embeddings come in already tuned."""

    def __init__(self, model: torch.nn.Module, lora: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.lora = lora

    def forward(self, x: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
        return self.model(x, **kw)


def _synthetic(kind: str, seed: int) -> EHRTable:
    from clinfuse.methods.ehrprompt import synthetic

    return {"ehr": synthetic.make_synthetic_ehr, "surgical": synthetic.make_surgical_table}[kind](
        seed=seed
    )


def _parse_corrupt(spec: str) -> tuple[str, float]:
    """``mask:0.3`` / ``marginal:0.1`` -> (mode, rate)."""
    try:
        mode, rate = spec.split(":")
        value = float(rate)
    except ValueError:
        raise ConfigError(
            f"bad corruption {spec!r}", expected="mask:RATE or marginal:RATE", found=spec
        ) from None
    if mode not in ("mask", "marginal") or not 0.0 <= value <= 1.0:
        raise ConfigError(f"bad corruption {spec!r}", expected="mask|marginal:RATE in [0, 1]")
    return mode, value
