r"""The MEETI builder: ``clinfuse build meeti``.

For each study it writes, under the MIMIC-IV-ECG layout
``files/p<first 4 of subject>/p<subject>/s<study>/``:

* ``<study>.npz`` - the waveform (``signal`` (n_samples, 12) float32 mV, ``fs``, ``leads``);
* ``<study>.png`` - the ECG on millimetre paper (:mod:`.plot`);
* ``<study>.beats.parquet`` - the beat x lead parameter table (:mod:`.params`);
* ``<study>.interp.json`` - the interpretation text with its prompt, prompt hash and model id;
* ``<study>.done.json`` - written last: the record summary and flags. A study with this marker is
  finished and is skipped by ``--resume``; a killed build loses at most the studies in flight.

At the end the build joins every finished study into ``records.parquet`` (one row per study),
``beats.parquet`` (one row per study x lead x beat), ``record_list.csv`` (MIMIC columns) and
``dataset_card.{md,json}``; all are rewritten from the markers, so a resumed build never
duplicates a study. Records run through a local process pool (``executor=process``), in the
calling process (``serial``) or on a Ray cluster (``ray``; ``ray_address`` or a local instance).
"""

from __future__ import annotations

import json
import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from clinfuse.core.builder import BUILDERS, Builder, DatasetCard
from clinfuse.core.config import check_fields
from clinfuse.core.errors import ClinfuseError, ConfigError, DataError
from clinfuse.core.executor import run_tasks
from clinfuse.core.learner import DemoResult
from clinfuse.core.loop import progress_enabled
from clinfuse.core.paths import Slugs, output_path
from clinfuse.core.runs import RunDir, atomic_path, atomic_write_json

log = logging.getLogger(__name__)

__all__ = ["MEETI", "MEETIConfig", "process_record", "study_dir"]


@dataclass(frozen=True)
class MEETIConfig:
    """MEETI data set builder (arXiv 2507.15255)."""

    data: str = "default"
    """`default` (12-lead ECGs simulated with neurokit2 plus the real recordings installed
    packages ship), or a folder: any WFDB directory, the MIMIC-IV-ECG layout, or LUDB."""
    allow_outside_paths: bool = False
    """Accept record paths in record_list.csv that lie outside the data folder (absolute
    paths, ``..``); off, such a row is refused."""
    layout: Literal["auto", "wfdb", "mimic", "ludb"] = "auto"
    """Input layout (auto: MIMIC when record_list.csv exists, LUDB when ludb.csv exists)."""
    n_simulated: int = 8
    """Simulated records in the default data."""
    limit: int | None = None
    """Build only the first N records (None: all)."""
    target_fs: float | None = 500.0
    """Sampling rate of the output waveforms (None keeps each file's)."""
    resample: bool = True
    """Resample records at another rate (False: refuse them, each with a clear message)."""
    require_leads: int = 12
    """Records with fewer leads are refused (never padded silently)."""
    method: Literal["prominence", "dwt"] = "prominence"
    """neurokit2 delineation (prominence: faster and closer to LUDB's cardiologists)."""
    images: bool = True
    """Write the PNG of every study."""
    image_layout: Literal["3x4", "6x2", "12x1"] = "3x4"
    """ECG paper layout (3x4 gets a lead II rhythm strip)."""
    dpi: int = 300
    """Image resolution (MEETI: 300 dpi, 25 mm/s, 10 mm/mV)."""
    text_backend: str = "rules"
    """`rules` (offline rule-based interpreter) or an llm backend spec such as
    `openai:gpt-4o@http://localhost:8000/v1`."""
    text_cache: bool = True
    """Cache LLM answers in the build folder (keyed by prompt hash)."""
    executor: Literal["process", "ray", "serial"] = "process"
    """Where records run: a local process pool, a Ray cluster, or this process."""
    workers: int = 2
    """Processes of the local pool (and CPUs of a local Ray instance)."""
    ray_address: str | None = None
    """Address of a running Ray cluster (None: start a local instance)."""
    seed: int = 0
    """Seed of the simulated default records."""
    progress: bool = True
    """Show a progress bar with records per second."""

    def __post_init__(self) -> None:
        checks = {
            "n_simulated": (self.n_simulated >= 0, ">= 0"),
            "workers": (self.workers >= 1, ">= 1"),
            "dpi": (50 <= self.dpi <= 1200, "in [50, 1200]"),
            "require_leads": (1 <= self.require_leads <= 12, "in [1, 12]"),
            "limit": (self.limit is None or self.limit >= 1, ">= 1 or none"),
        }
        check_fields(self, checks)


# ------------------------------------------------------------------------------------------
# one record
# ------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


def study_dir(root: str | Path, study_id: str, subject_id: str | None) -> Path:
    """``files/p<4>/p<subject>/s<study>`` (MIMIC-IV-ECG). A record without a subject gets a
    stable 8-digit pseudo subject from the study id (CRC32)."""
    sub = (
        _safe(subject_id)
        if subject_id
        else str(10_000_000 + zlib.crc32(study_id.encode()) % 90_000_000)
    )
    return Path(root) / "files" / f"p{sub[:4]}" / f"p{sub}" / f"s{_safe(study_id)}"


def _paths(root: str | Path, study_id: str, subject_id: str | None) -> dict[str, Path]:
    d = output_path(root, study_dir("", study_id, subject_id))
    stem = _safe(study_id)
    return {
        "dir": d,
        "waveform": d / f"{stem}.npz",
        "image": d / f"{stem}.png",
        "beats": d / f"{stem}.beats.parquet",
        "text": d / f"{stem}.interp.json",
        "done": d / f"{stem}.done.json",
    }


_BACKENDS: dict[tuple[str, str, bool], Any] = {}


def _backend(cfg: MEETIConfig, root: str) -> Any:
    """The text backend of this process (built once per process and config)."""
    key = (cfg.text_backend, root, cfg.text_cache)
    if key not in _BACKENDS:
        from clinfuse.builders.meeti.text import RULES_MODEL_ID, rule_interpreter
        from clinfuse.llm.local import CallableBackend

        if cfg.text_backend == "rules":
            backend: Any = CallableBackend(rule_interpreter, RULES_MODEL_ID)
        else:
            from clinfuse.llm.base import make_backend

            backend = make_backend(cfg.text_backend)
            if cfg.text_cache:
                from clinfuse.llm.cache import CachedBackend

                backend = CachedBackend(backend, Path(root) / "llm_cache")
        _BACKENDS[key] = backend
    return _BACKENDS[key]


def _write_npz(path: Path, signal: np.ndarray, fs: float, leads: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, signal=signal.astype(np.float32), fs=np.float64(fs), leads=np.array(list(leads))
        )


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating):
            out[k] = None if not math.isfinite(float(v)) else float(v)
        elif isinstance(v, np.integer):
            out[k] = int(v)
        else:
            out[k] = v
    return out


def process_record(ref: Any, cfg_dict: dict[str, Any], root: str) -> dict[str, Any]:
    """Build one study (run in a worker). Returns ``{"status": "done" | "failed", ...}``; a
    record-level problem (bad file, too few leads, ...) is reported, never raised."""
    from clinfuse.builders.meeti import io, params, plot, text

    cfg = MEETIConfig(**cfg_dict)
    t0 = time.perf_counter()
    study = str(ref.study_id)
    try:
        rec = io.load(
            ref,
            io.LoadConfig(
                target_fs=cfg.target_fs, resample=cfg.resample, require_leads=cfg.require_leads
            ),
        )
        p = _paths(root, study, ref.subject_id)
        p["dir"].mkdir(parents=True, exist_ok=True)
        beats = params.delineate_record(
            rec.signal, rec.fs, rec.leads, params.ParamsConfig(method=cfg.method)
        )
        summary = params.summarise_record(beats, rec.leads, rec.fs)
        per_lead = params.per_lead_medians(beats)
        rr = beats.groupby("beat")["rr_ms"].median().dropna()
        rr_sd = float(rr.std()) if len(rr) > 2 else None
        _write_npz(p["waveform"], rec.signal, rec.fs, rec.leads)
        flags = {k: list(v) for k, v in rec.flags.items()}
        if cfg.images:
            image = plot.render(
                rec.signal, rec.fs, rec.leads, plot.PlotConfig(dpi=cfg.dpi, layout=cfg.image_layout)
            )
            image.save_png(p["image"])
            if image.clipped_leads:
                flags["clipped_in_image"] = list(image.clipped_leads)
        _write_parquet(beats.assign(study_id=study), p["beats"])
        messages = text.build_prompt(
            study,
            summary,
            per_lead,
            report=ref.report,
            machine=ref.machine,
            flags=flags,
            fs=rec.fs,
            rr_sd_ms=rr_sd,
        )
        completion = text.generate(_backend(cfg, root), messages)
        atomic_write_json(p["text"], text.interpretation_record(study, messages, completion))
        files = {k: str(v.relative_to(root)) for k, v in p.items() if k not in ("dir", "done")}
        if not cfg.images:
            files.pop("image")
        marker = {
            "study_id": study,
            "subject_id": ref.subject_id,
            "ecg_time": ref.ecg_time,
            "source": ref.source,
            "fs": float(rec.fs),
            "n_samples": int(rec.signal.shape[0]),
            "leads": list(rec.leads),
            "flags": flags,
            "summary": _jsonable(dict(summary)),
            "files": files,
            "text_model_id": completion.model_id,
            "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(p["done"], marker)  # last: the study is finished
        return {"status": "done", "study_id": study, "seconds": marker["seconds"]}
    except ClinfuseError as exc:
        log.warning("study %s failed: %s", study, exc)
        return {"status": "failed", "study_id": study, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one broken record must not stop the build
        log.exception("study %s failed unexpectedly", study)
        return {"status": "failed", "study_id": study, "error": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------------------
# the builder
# ------------------------------------------------------------------------------------------
@BUILDERS.register("meeti")
class MEETI(Builder):
    """Aligned ECG waveform, image, beat-level parameters and interpretation text per study."""

    name = "meeti"
    config_cls = MEETIConfig
    description = "ECG data set: waveform, 300-dpi image, beat x lead parameters, text"
    paper = "arXiv 2507.15255 (MEETI)"
    status = (
        "done (no real MIMIC-IV-ECG run; default texts from the offline rule-based interpreter)"
    )

    _refs: list[Any] | None = None

    def prepare(self) -> None:
        """Scan the user's input folder (and refuse colliding study ids) before the build
        folder exists; the default data are written inside the build folder by :meth:`refs`."""
        if self.config.data != "default":
            self._refs = self._checked(self._user_refs())

    def _user_refs(self) -> list[Any]:
        from clinfuse.builders.meeti import io

        root = Path(self.config.data)
        if not root.exists():
            raise DataError(
                f"input folder {root} does not exist",
                expected="a WFDB directory, a MIMIC-IV-ECG root or LUDB",
                found=str(root),
                fix="--data /path/to/records, or --set data=default",
            )
        return io.scan(root, self.config.layout, allow_outside=self.config.allow_outside_paths)

    def _checked(self, refs: list[Any]) -> list[Any]:
        """``refs`` (first ``limit``), refusing two records whose study folders would be one."""
        if not refs:
            raise DataError(
                f"no ECG records found in {self.config.data}", fix="check --data / --set layout"
            )
        refs = refs[: self.config.limit] if self.config.limit else refs
        folders = Slugs("study id")
        for ref in refs:
            key = study_dir("", str(ref.study_id), ref.subject_id).as_posix()
            folders.add(f"{ref.subject_id}/{ref.study_id}", str(ref.path), key)
        return refs

    def refs(self, run: RunDir) -> list[Any]:
        """The input records: the embedded default is first written as a MIMIC-IV-ECG mini
        database under ``<run>/inputs`` (so the default exercises the MIMIC reader too)."""
        from clinfuse.builders.meeti import io

        cfg = self.config
        if self._refs is not None:
            return self._refs
        if cfg.data == "default":
            from clinfuse.builders.meeti.default_data import default_records

            inputs = run.path / "inputs"
            if not (inputs / "record_list.csv").exists():
                io.write_mimic_layout(default_records(n_sim=cfg.n_simulated, seed=cfg.seed), inputs)
            return self._checked(io.scan(inputs, "mimic"))
        return self._checked(self._user_refs())

    def build(self, run: RunDir, *, resume: bool = False) -> DatasetCard:
        from tqdm.auto import tqdm

        cfg = self.config
        root = str(run.path)
        refs = self.refs(run)
        todo, skipped = [], 0
        for ref in refs:
            if _paths(root, str(ref.study_id), ref.subject_id)["done"].exists():
                skipped += 1
            else:
                todo.append(ref)
        if skipped and not resume:
            raise ConfigError(
                f"{run.path} already holds {skipped} finished studies",
                expected="a new --out, or --resume",
                fix="add --resume to continue this build",
            )
        log.info("meeti: %d records, %d already done, %d to build", len(refs), skipped, len(todo))
        failures: dict[str, str] = {}
        t0 = time.perf_counter()
        done = 0
        bar = tqdm(
            total=len(todo), desc="meeti", unit="rec", disable=not progress_enabled(cfg.progress)
        )
        results = run_tasks(
            process_record,
            todo,
            args=(asdict(cfg), root),
            executor=cfg.executor,
            workers=cfg.workers,
            ray_address=cfg.ray_address,
        )
        for res in results:
            if res["status"] == "done":
                done += 1
            else:
                failures[res["study_id"]] = res["error"]
            bar.update(1)
            bar.set_postfix(
                rec_per_s=f"{bar.n / max(time.perf_counter() - t0, 1e-9):.2f}", failed=len(failures)
            )
        bar.close()
        seconds = time.perf_counter() - t0
        card = self._assemble(run, refs, failures, skipped)
        card.stats.update(
            {"build_seconds": seconds, "records_per_second": done / seconds if seconds > 0 else 0.0}
        )
        card.write(run.path)
        metrics = {
            "n_records": card.n_records,
            "n_built_now": done,
            "n_skipped": skipped,
            "n_failed": len(failures),
            "build_seconds": seconds,
            "records_per_second": card.stats["records_per_second"],
            **self.evaluate(run),
        }
        run.write_metrics(metrics)
        atomic_write_json(run.path / "failures.json", failures)
        self._plots(run)
        log.info("meeti data set written to %s", run.path)
        return card

    def _markers(self, run: RunDir) -> list[dict[str, Any]]:
        out = []
        for path in sorted((run.path / "files").glob("p*/p*/s*/*.done.json")):
            out.append(json.loads(path.read_text()))
        return out

    def _assemble(
        self, run: RunDir, refs: Sequence[Any], failures: dict[str, str], skipped: int
    ) -> DatasetCard:
        """Join every finished study (from its marker) into the tables: rewritten each time, so
        nothing is duplicated however often a build is resumed."""
        markers = self._markers(run)
        rows, beats = [], []
        for m in markers:
            row = {
                "study_id": m["study_id"],
                "subject_id": m["subject_id"],
                "ecg_time": m["ecg_time"],
                "source": m["source"],
                "fs": m["fs"],
                "n_samples": m["n_samples"],
                "leads": ",".join(m["leads"]),
                "text_model_id": m["text_model_id"],
                **{f"flag_{k}": ",".join(v) for k, v in m["flags"].items()},
                **{f"path_{k}": v for k, v in m["files"].items()},
                **{k: (np.nan if v is None else v) for k, v in m["summary"].items()},
            }
            rows.append(row)
            beats.append(pd.read_parquet(run.path / m["files"]["beats"]))
        records = pd.DataFrame(rows)
        _write_parquet(records, run.path / "records.parquet")
        if beats:
            _write_parquet(pd.concat(beats, ignore_index=True), run.path / "beats.parquet")
        record_list = pd.DataFrame(
            {
                "subject_id": records.get("subject_id", pd.Series(dtype=str)),
                "study_id": records.get("study_id", pd.Series(dtype=str)),
                "file_name": records.get("study_id", pd.Series(dtype=str)),
                "ecg_time": records.get("ecg_time", pd.Series(dtype=str)),
                "path": [str(Path(p).with_suffix("")) for p in records.get("path_waveform", [])],
            }
        )
        with atomic_path(run.path / "record_list.csv") as tmp:
            record_list.to_csv(tmp, index=False)
        stats: dict[str, float] = {}
        for key in ("hr_bpm", "qrs_ms", "qtc_bazett_ms"):
            if key in records:
                stats[f"median_{key}"] = float(np.nanmedian(records[key].to_numpy(float)))
        return DatasetCard(
            name="meeti",
            root=str(run.path),
            n_records=len(records),
            n_failed=len(failures),
            n_skipped=skipped,
            components={
                "waveform": "files/p*/p*/s*/<study>.npz (signal mV, fs, leads)",
                "image": "files/p*/p*/s*/<study>.png",
                "beats (per study)": "files/p*/p*/s*/<study>.beats.parquet",
                "text": "files/p*/p*/s*/<study>.interp.json",
                "records": "records.parquet (one row per study; summary, flags, paths)",
                "beats": "beats.parquet (study x lead x beat)",
                "record list": "record_list.csv (MIMIC-IV-ECG columns)",
            },
            stats=stats,
            failures=failures,
            notes=(
                "Every component joins on study_id. Read with pandas "
                "(`pd.read_parquet('records.parquet')`) or Hugging Face datasets "
                "(`load_dataset('parquet', data_files='records.parquet')`). Interpretation "
                "texts: see text_model_id (`clinfuse-ecg-rules-v1` is the offline rule-based "
                "interpreter, not an LLM)."
            ),
        )

    def evaluate(self, run: RunDir) -> dict[str, float]:
        """Alignment checks: every study in records.parquet has each of its components on disk
        and the same study ids appear in beats.parquet."""
        path = run.path / "records.parquet"
        if not path.exists():
            return {}
        records = pd.read_parquet(path)
        out: dict[str, float] = {"n_studies": float(len(records))}
        for col in [c for c in records.columns if c.startswith("path_")]:
            present = [(run.path / p).exists() for p in records[col].dropna()]
            out[f"share_with_{col[5:]}"] = float(np.mean(present)) if present else 0.0
        beats_path = run.path / "beats.parquet"
        if beats_path.exists():
            ids = set(pd.read_parquet(beats_path, columns=["study_id"])["study_id"])
            studies = records["study_id"] if len(records) else []
            out["share_with_beat_rows"] = (
                float(np.mean([s in ids for s in studies])) if len(studies) else 0.0
            )
        ids = records["study_id"] if "study_id" in records else pd.Series(dtype=str)
        out["duplicate_studies"] = float(ids.duplicated().sum())
        return out

    def _plots(self, run: RunDir) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = pd.read_parquet(run.path / "records.parquet")
        out = []
        fig, axes = plt.subplots(1, 3, figsize=(11, 3))
        for ax, key in zip(axes, ("hr_bpm", "qrs_ms", "qtc_bazett_ms"), strict=True):
            if key in records:
                ax.hist(records[key].dropna(), bins=20, color="tab:red")
            ax.set_title(key)
        fig.tight_layout()
        with atomic_path(run.plots / "summary_histograms.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        out.append(run.plots / "summary_histograms.png")
        first = records["path_image"].dropna() if "path_image" in records else pd.Series([])
        if len(first):
            from PIL import Image

            img = Image.open(run.path / first.iloc[0])
            img.thumbnail((1400, 1400))
            with atomic_path(run.plots / "example_ecg.png") as tmp:
                img.save(tmp, format="PNG")
            out.append(run.plots / "example_ecg.png")
        return out

    def demo(self, run: RunDir, card: DatasetCard) -> DemoResult:
        m = run.read_metrics()
        total = card.n_records + card.n_failed
        return DemoResult(
            system="meeti",
            data=f"default ({self.config.n_simulated} simulated + packaged real records)",
            metric="studies built with all components",
            value=float(card.n_records),
            baseline="studies in the input",
            baseline_value=float(total),
            extra={k: float(v) for k, v in m.items() if k.startswith(("records_per", "share_"))},
            plots=sorted(run.plots.glob("*.png")),
            notes=f"Data set card: {run.path / 'dataset_card.md'}",
        )
