"""DIB as a clinfuse learner: fit, evaluate (optionally corrupted), predict, demo.

The training objective and the network live in :mod:`.losses` and :mod:`.model`; this module wires
them to the data, the shared loop (:func:`clinfuse.core.loop.fit_loop`), the MMSA metrics and the
test-time corruptions of :mod:`clinfuse.robustness`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clinfuse.core.config import config_to_dict
from clinfuse.core.learner import METHODS, DemoResult, Learner, check_split
from clinfuse.core.loop import fit_loop, make_accelerator
from clinfuse.core.runs import RunDir
from clinfuse.core.seed import seed_everything
from clinfuse.methods.dib.config import DIBConfig
from clinfuse.methods.dib.data import MSAData, MSADataset, MSASplit, load_msa
from clinfuse.methods.dib.losses import beta_scale, dib_loss, modality_mi
from clinfuse.methods.dib.model import DIBModel
from clinfuse.methods.dib.synthetic import SYNTHETIC_PRESETS
from clinfuse.metrics.msa import MSA_METRICS, main_metric
from clinfuse.robustness import parse_corruption

log = logging.getLogger(__name__)


def corrupt_split(
    data: MSAData, split: str, spec: str | None, seed: int, modalities: tuple[str, ...]
) -> MSASplit:
    """``data.splits[split]`` under the seeded corruption ``spec`` (noise std: train split)."""
    target = data.splits[split]
    if not spec:
        return target
    corruption = parse_corruption(spec, modalities=modalities)
    train = data.splits["train"]
    corruption.fit(train.features(), train.lengths())
    rng = np.random.default_rng(seed)
    return target.with_features(corruption(target.features(), target.lengths(), rng))


def _pooled(split: MSASplit) -> np.ndarray:
    """Mean of the valid frames of every modality, concatenated: (N, d_t + d_a + d_v)."""
    feats, lens = split.features(), split.lengths()
    cols = []
    for m in ("text", "audio", "vision"):
        x = feats[m].astype(np.float64)
        valid = np.arange(x.shape[1])[None, :, None] < lens[m][:, None, None]
        cols.append((x * valid).sum(1) / np.maximum(lens[m], 1)[:, None])
    return np.concatenate(cols, axis=1)


def fit_ridge(train: MSASplit, alpha: float = 1.0) -> Callable[[MSASplit], np.ndarray]:
    """Late-fusion linear baseline: ridge regression on the mean-pooled valid frames.

    The demo's and the benchmarks' independent baseline; returns a predictor of a split.
    """
    x = _pooled(train)
    mu, sd = x.mean(0), x.std(0) + 1e-8
    xs = (x - mu) / sd
    y = train.labels.astype(np.float64)
    w = np.linalg.solve(xs.T @ xs + alpha * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
    return lambda split: ((_pooled(split) - mu) / sd) @ w + y.mean()


DEMO_BASELINE: tuple[str, dict[str, Any]] = ("concat fusion", {"fusion": "concat", "ib": "none"})
"""The demo's neural baseline: its row name in ``benchmarks/dib_hard.py`` and the config changes
that make it from the DIB config (same encoders, budget and ``corrupt_train``): concatenation
fusion without a bottleneck, the strongest baseline under audio/vision noise there."""

DEMO_NOISE: tuple[str, ...] = ("audio", "vision")
"""Modalities the demo's Gaussian noise corrupts (text, the anchor, stays clean)."""


@METHODS.register("dib")
class DIB(Learner):
    """Double information bottleneck for robust multimodal sentiment analysis."""

    name = "dib"
    config_cls = DIBConfig
    description = "robust multimodal sentiment analysis: double Renyi information bottleneck"
    paper = "arXiv 2511.01444 (Huang, Gong, He, Wu, Cambria, Feng)"
    status = "done"
    demo_preset = "hard"

    def __init__(self, config: DIBConfig) -> None:
        super().__init__(config)
        self.model: DIBModel | None = None
        self.dims: dict[str, int] | None = None

    # -- data -----------------------------------------------------------------------------
    def load_data(self, path: str | None = None) -> MSAData:
        cfg = self.config
        source = path or cfg.data
        if source in SYNTHETIC_PRESETS:
            return SYNTHETIC_PRESETS[source]()
        if not Path(source).exists():
            from clinfuse.core.errors import DataError

            raise DataError(
                f"data {source!r} is neither a synthetic preset nor an existing file",
                expected=f"one of {sorted(SYNTHETIC_PRESETS)} or a path to an MMSA/MAG-BERT pickle",
                found=repr(source),
                fix="--data /path/to/MOSI/Processed/aligned_50.pkl, or --set data=synthetic_mosi",
            )
        expected = {m: d for m in ("text", "audio", "vision") if (d := cfg.feature_dim(m))}
        return load_msa(
            source,
            expected_dims=expected or None,
            use_bert_ids=cfg.text_encoder == "bert",
            max_seq_len=cfg.max_seq_length,
        )

    def _loader(self, split: MSASplit, train: bool, gen: torch.Generator | None = None):
        cfg = self.config
        return DataLoader(
            MSADataset(split),
            batch_size=cfg.batch_size if train else cfg.eval_batch_size,
            shuffle=train,
            drop_last=train and split.n > cfg.batch_size,
            generator=gen,
            num_workers=cfg.num_workers,
        )

    def _build(self, dims: dict[str, int]) -> DIBModel:
        self.dims = dict(dims)
        self.model = DIBModel(self.config, self.dims)
        return self.model

    # -- training -------------------------------------------------------------------------
    def fit(self, data: MSAData, run: RunDir, *, resume: bool = False) -> DIB:
        cfg = self.config
        _, gen = seed_everything(cfg.seed)
        model = self._build(data.dims())
        acc = make_accelerator(cfg.device)
        opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt_cls(model.param_groups(), weight_decay=cfg.weight_decay)
        train_split = data.splits["train"]
        loader = self._loader(train_split, train=True, gen=gen)
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        device = acc.device

        if cfg.corrupt_train:
            parse_corruption(cfg.corrupt_train, modalities=cfg.modalities)  # fail early

        def step(m: torch.nn.Module, batch: dict, epoch: int):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = m(batch)
            return dib_loss(out, batch, cfg, beta_scale=beta_scale(cfg, epoch - 1))  # loop: 1-based

        def evaluate(m: torch.nn.Module) -> dict[str, float]:
            return self._score(m, data.splits["valid"], data.dataset_kind, device)

        monitor = cfg.monitor.removeprefix("valid_")
        result = fit_loop(
            model=model,
            optimizer=optimizer,
            train_loader=_EpochCorrupted(self, data, loader, gen) if cfg.corrupt_train else loader,
            step_fn=step,
            eval_fn=evaluate,
            run=run,
            epochs=cfg.epochs,
            monitor=monitor,
            mode=cfg.monitor_mode,
            patience=cfg.patience or None,
            grad_clip=cfg.grad_clip,
            progress=cfg.progress,
            resume=resume,
            accelerator=acc,
            extra_state=lambda: {"dims": dict(self.dims or {})},
        )
        self.model = acc.unwrap_model(model).to("cpu")
        best = run.load_checkpoint("best") if acc.is_main_process else None
        if best is not None:
            self.model.load_state_dict(best["model"])
        if acc.is_main_process:
            self._finish(data, run, result.best_epoch)
        return self

    def _finish(self, data: MSAData, run: RunDir, best_epoch: int) -> None:
        metrics: dict[str, Any] = {"best_epoch": best_epoch, "data": data.name}
        for split in ("valid", "test"):
            metrics.update({f"{split}_{k}": v for k, v in self.evaluate(data, split).items()})
        metrics.update({f"test_mi_{k}": v for k, v in self.modality_mi(data, "test").items()})
        run.write_metrics(metrics)
        run.write_predictions(
            pd.concat([self.predict(data, s) for s in ("valid", "test")], ignore_index=True)
        )
        self.plot(data, run)
        log.info("dib run written to %s", run.path)

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def _forward_split(
        self, m: torch.nn.Module, split: MSASplit, device: torch.device | str = "cpu"
    ) -> dict[str, Any]:
        m.eval()
        preds, zs = [], {}
        for batch in self._loader(split, train=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = m(batch)
            preds.append(out["pred"].float().cpu())
            for k, v in out["z"].items():
                zs.setdefault(k, []).append(v.float().cpu())
        return {
            "pred": torch.cat(preds).numpy(),
            "z": {k: torch.cat(v) for k, v in zs.items()},
        }

    def _score(
        self, m: torch.nn.Module, target: MSASplit, kind: str, device: torch.device | str = "cpu"
    ) -> dict[str, float]:
        pred = self._forward_split(m, target, device)["pred"]
        y = target.labels
        metrics = dict(MSA_METRICS.get(kind)(pred, y))
        err = pred - y
        metrics["mse"] = float(np.mean(err**2))
        metrics["loss"] = (
            float(np.mean(np.abs(err))) if self.config.loss == "l1" else metrics["mse"]
        )
        acc2 = metrics.get("non0_acc2", metrics.get("acc2"))
        f1 = metrics.get("non0_f1", metrics.get("f1"))
        if acc2 is not None:
            metrics["acc2"] = float(acc2)
        if f1 is not None:
            metrics["f1"] = float(f1)
        return metrics

    def evaluate(self, data: MSAData, split: str = "test", corrupt: str | None = None) -> dict:
        check_split(split, data.splits)
        model = self._require_model()
        target = corrupt_split(data, split, corrupt, self.config.seed, self.config.modalities)
        return self._score(model, target, data.dataset_kind)

    def predict(self, data: MSAData, split: str = "test") -> pd.DataFrame:
        target = data.splits[check_split(split, data.splits)]
        model = self._require_model()
        pred = self._forward_split(model, target)["pred"]
        return pd.DataFrame(
            {
                "split": split,
                "id": [str(i) for i in target.ids],
                "label": target.labels,
                "pred": pred,
            }
        )

    def modality_mi(self, data: MSAData, split: str = "test") -> dict[str, float]:
        """I_alpha(Z_m; Y) per modality on up to ``mi_eval_samples`` samples (exact spectrum)."""
        target = data.splits[check_split(split, data.splits)]
        model = self._require_model()
        z = self._forward_split(model, target)["z"]
        n = min(self.config.mi_eval_samples, target.n)
        idx = np.random.default_rng(self.config.seed).permutation(target.n)[:n]
        y = torch.as_tensor(target.labels[idx], dtype=torch.float64)
        return modality_mi({k: v[idx].double() for k, v in z.items()}, y, self.config)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self._require_model().state_dict(), "dims": dict(self.dims or {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build({k: int(v) for k, v in state["dims"].items()})
        assert self.model is not None
        self.model.load_state_dict(state["model"])
        self.model.eval()

    # -- plots and demo -------------------------------------------------------------------
    def plot(self, data: MSAData, run: RunDir) -> list[Path]:
        from clinfuse.report import plots

        paths = [plots.learning_curves(run.read_history(), run.plots / "learning_curves.png")]
        test = self.predict(data, "test")
        paths.append(
            plots.scatter_true_pred(
                test["label"], test["pred"], run.plots / "pred_vs_true.png", f"DIB on {data.name}"
            )
        )
        mi = {
            k.removeprefix("test_mi_"): float(v)
            for k, v in run.read_metrics().items()
            if k.startswith("test_mi_")
        }
        if mi:
            paths.append(
                plots.bars(
                    mi, run.plots / "modality_mi.png", "I(Z_m; Y) on test (matrix Renyi)", "bits"
                )
            )
        return paths

    def demo(self, data: MSAData, run: RunDir) -> DemoResult:
        """DIB beside :data:`DEMO_BASELINE` (same encoders, data and budget) and ridge, clean and
        under Gaussian noise on :data:`DEMO_NOISE`; on ``synthetic_mosi_hard`` also the Bayes
        accuracy of the same noisy test sets."""
        from clinfuse.methods.dib.synthetic_hard import hard_bayes_accuracy
        from clinfuse.report import plots

        metric = main_metric(data.dataset_kind)
        metrics = run.read_metrics()
        mods = self.config.modalities
        noisy_mods = [m for m in DEMO_NOISE if m in mods]
        label, changes = DEMO_BASELINE
        baseline_cfg = dataclasses.replace(self.config, **changes, progress=False)
        base_run = RunDir.create(run.path / "baseline", "dib", config_to_dict(baseline_cfg))
        baseline = DIB(baseline_cfg).fit(data, base_run)
        ridge = fit_ridge(data.splits["train"])
        score = MSA_METRICS.get(data.dataset_kind)
        gt = data.meta.get("ground_truth", {})
        oracle = "bayes_acc" in gt
        std = parse_corruption("gaussian:" + ",".join(noisy_mods) + ":1", modalities=mods)
        std.fit(data.splits["train"].features(), data.splits["train"].lengths())
        rhos = (0.0, 1.0, 2.0, 4.0)
        names = {"DIB": "DIB", "concat": label, "ridge": "ridge (mean-pooled, clean training)"}
        curves: dict[str, list[float]] = {v: [] for v in names.values()}
        if oracle:
            curves["Bayes oracle"] = []
        for rho in rhos:
            spec = None if rho == 0 else "gaussian:" + ",".join(noisy_mods) + f":{rho:g}"
            curves[names["DIB"]].append(self.evaluate(data, "test", corrupt=spec)[metric])
            curves[names["concat"]].append(baseline.evaluate(data, "test", corrupt=spec)[metric])
            noisy = corrupt_split(data, "test", spec, self.config.seed, mods)
            curves[names["ridge"]].append(score(ridge(noisy), noisy.labels)[metric])
            if oracle:
                extra_std = {m: rho * v for m, v in std.std.items()}
                curves["Bayes oracle"].append(hard_bayes_accuracy(noisy, gt, extra_std)["expected"])
        plot = plots.curves(
            rhos,
            curves,
            run.plots / "noise_audio_vision.png",
            xlabel="noise rho (x train std), " + " + ".join(noisy_mods),
            ylabel=f"test {metric}",
            title=f"DIB and baselines on {data.name}",
        )
        at2 = rhos.index(2.0)
        extra = {
            f"{name} {metric}, noise rho=2 on {'+'.join(noisy_mods)}": values[at2]
            for name, values in curves.items()
        }
        extra.update(
            {
                f"{name} drop clean->rho=2": values[0] - values[at2]
                for name, values in curves.items()
            }
        )
        extra.update({f"{name} {metric}, clean": values[0] for name, values in curves.items()})
        mi = {
            k.removeprefix("test_mi_"): float(v)
            for k, v in metrics.items()
            if k.startswith("test_mi_")
        }
        extra.update({f"I(Z_{k};Y), bits": v for k, v in mi.items()})
        return DemoResult(
            system="dib",
            data=data.name,
            metric=f"test {metric}",
            value=curves[names["DIB"]][at2],
            baseline=f"{label} (strongest baseline under noise in benchmarks/dib_hard.py); "
            f"value and baseline value under Gaussian noise rho=2 on {'+'.join(noisy_mods)}",
            baseline_value=curves[names["concat"]][at2],
            extra=extra,
            plots=[run.plots / "learning_curves.png", plot, run.plots / "modality_mi.png"],
            notes=(
                "The `hard` preset on synthetic_mosi_hard, the data of benchmarks/dib_hard.py: "
                "the label needs a cross-modal product (a flip that only a temporal audio/vision "
                "cue reveals) and audio/vision also carry an additive tone. DIB and the baseline "
                "share encoders, budget and the training-time noise of `corrupt_train`. Noise: "
                "Gaussian, rho x the per-feature training std, on "
                + " and ".join(noisy_mods)
                + "; the Bayes oracle is the planted model's exact posterior."
            ),
        )


def corrupted_train_split(data: MSAData, config: DIBConfig, epoch: int) -> MSASplit:
    """The train split under ``config.corrupt_train`` as epoch ``epoch`` (1-based) sees it.

    A seeded corruption (seed ``config.seed + epoch``) of a random share ``corrupt_train_p`` of
    the samples; the others stay clean. Without ``corrupt_train``: the clean train split.
    """
    clean = data.splits["train"]
    if not config.corrupt_train:
        return clean
    split = corrupt_split(
        data, "train", config.corrupt_train, config.seed + epoch, config.modalities
    )
    if config.corrupt_train_p < 1.0:  # a fresh random share of the samples stays clean
        rng = np.random.default_rng([config.seed, epoch, 1])
        keep = rng.random(clean.n) >= config.corrupt_train_p
        split = split.with_features(
            {
                m: np.where(keep[:, None, None], clean.features()[m], x)
                for m, x in split.features().items()
            }
        )
    return split


class _EpochCorrupted:
    """A train loader whose data get a fresh seeded corruption each epoch (``corrupt_train``),
    on a random share ``corrupt_train_p`` of the samples (:func:`corrupted_train_split`)."""

    def __init__(self, learner: DIB, data: MSAData, loader: Any, gen: torch.Generator) -> None:
        self.learner, self.data, self.loader, self.gen = learner, data, loader, gen
        self.epoch = 0

    def __iter__(self):
        self.epoch += 1
        split = corrupted_train_split(self.data, self.learner.config, self.epoch)
        return iter(self.learner._loader(split, train=True, gen=self.gen))
