"""The Med-Banana builder: ``clinfuse build medbanana``.

Tasks (:mod:`.tasks`) run through :func:`.loop.run_task` on a bounded thread pool (API-bound
work; ``executor=thread``), a process pool (CPU-bound local editor; ``executor=process``), Ray
(``--executor ray``, :func:`run_one` as a remote function) or inline (``serial``). The build is
resumable: a task with a line in ``tasks.jsonl`` is skipped; attempts and images of unfinished
tasks are discarded and redone, so a resumed build equals an uninterrupted one. At the end the
logs are joined into Parquet manifests (``tasks``, ``attempts``, ``preference_pairs``,
``prompt_pairs``, ``kto``) and the data set card.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from clinfuse.builders.medbanana import preference, records
from clinfuse.builders.medbanana.config import MedBananaConfig
from clinfuse.builders.medbanana.loop import ATTEMPTS, CONVERSATIONS, TASKS, run_task
from clinfuse.builders.medbanana.tasks import Task, make_tasks, read_manifest, scan_folder
from clinfuse.core.builder import BUILDERS, Builder, DatasetCard
from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.learner import DemoResult
from clinfuse.core.loop import progress_enabled
from clinfuse.core.paths import is_within, slug
from clinfuse.core.runs import RunDir, atomic_path

log = logging.getLogger(__name__)

__all__ = ["MedBanana", "MedBananaConfig", "progress_stats", "resume_state", "run_one"]

_ROLES: dict[tuple[str, str], Any] = {}


def run_one(task: dict[str, Any], cfg_dict: dict[str, Any], root: str) -> dict[str, Any]:
    """One task in a worker process / Ray task (roles built once per process)."""
    from clinfuse.builders.medbanana.roles import make_roles

    cfg = MedBananaConfig(**cfg_dict)
    key = (repr(sorted(cfg_dict.items())), root)
    if key not in _ROLES:
        _ROLES[key] = make_roles(cfg, root)
    return run_task(Task(**task), cfg, root, _ROLES[key])


def progress_stats(n: int, n_ok: int, seconds: float) -> dict[str, float]:
    r"""Throughput and success of the tasks run so far: ``tasks_per_min`` :math:`= 60\,n/t` and
    ``success_rate`` :math:`= n_{ok}/n` (0 when nothing ran). The progress bar shows both.

    Example:
        >>> progress_stats(6, 5, 30.0)
        {'tasks_per_min': 12.0, 'success_rate': 0.8333333333333334}
    """
    return {
        "tasks_per_min": 60.0 * n / seconds if n and seconds > 0 else 0.0,
        "success_rate": n_ok / n if n else 0.0,
    }


def resume_state(root: Path, task_ids: set[str] | None = None) -> set[str]:
    """Finished task ids; drops torn lines, and the attempts, images and conversations of
    unfinished tasks (they are redone from round 1).

    The logs are untrusted: an image is deleted only when it lies under ``root`` and still has
    the SHA-256 its attempt recorded; a conversation only when its task is one of ``task_ids``
    (the tasks of this build's inputs), under ``conversations/``."""
    done_rows, _ = records.rewrite_jsonl(root / TASKS, lambda r: isinstance(r.get("task_id"), str))
    done = {r["task_id"] for r in done_rows}
    _, dropped = records.rewrite_jsonl(root / ATTEMPTS, lambda r: r.get("task_id") in done)
    n = records.remove_files(root, ((r.get("image"), r.get("image_sha256")) for r in dropped))
    for tid in {r.get("task_id") for r in dropped} & (task_ids or set()):
        conv = root / CONVERSATIONS / f"{slug(tid)}.json"
        if conv.is_file() and not conv.is_symlink() and is_within(conv, root / CONVERSATIONS):
            conv.unlink()
    if dropped:
        log.info(
            "medbanana: discarded %d attempts (%d images) of unfinished tasks", len(dropped), n
        )
    return done


@BUILDERS.register("medbanana")
class MedBanana(Builder):
    """Instruction-based medical image editing data with judge, refiner and failed attempts."""

    name = "medbanana"
    config_cls = MedBananaConfig
    description = "medical image editing data set: edits, rubric verdicts, preference pairs"
    paper = "arXiv 2511.00801 (Med-Banana-50K)"
    status = (
        "done (local deterministic editor/judge on 3 packaged real images; Gemini and OpenAI "
        "backends tested against loopback fakes only)"
    )

    attempt_hook: Callable[[dict[str, Any]], None] | None = None
    """Called after every attempt is logged (thread / serial executors); tests inject faults."""

    _tasks: list[Task] | None = None

    def prepare(self) -> None:
        """Read the manifest or scan the folder and make the tasks (user data only; the
        default data are written inside the build folder by :meth:`tasks`)."""
        if self.config.data != "default":
            self._tasks = self._make(self._user_sources())

    def _user_sources(self) -> list[Any]:
        path = Path(self.config.data)
        if not path.exists():
            raise DataError(
                f"input {path} does not exist",
                expected="a folder <dataset>/{normal,<Disease>}/* or a CSV manifest",
                found=str(path),
                fix="--data /path/to/images, or --set data=default",
            )
        if path.suffix.lower() == ".csv":
            return read_manifest(path, allow_outside=self.config.allow_outside_paths)
        return scan_folder(path)

    def _make(self, srcs: list[Any]) -> list[Task]:
        cfg = self.config
        tasks = make_tasks(srcs, cfg.modality, cfg.diseases, cfg.directions)
        return tasks[: cfg.limit] if cfg.limit else tasks

    def tasks(self, run: RunDir) -> list[Task]:
        if self._tasks is not None:
            return self._tasks
        if self.config.data == "default":
            from clinfuse.builders.medbanana.sources import write_default_inputs

            manifest = run.path / "inputs" / "manifest.csv"
            if not manifest.exists():
                write_default_inputs(run.path / "inputs", self.config.max_side, self.config.seed)
            return self._make(read_manifest(manifest))
        return self._make(self._user_sources())

    # -- executor ----------------------------------------------------------------------------
    def _results(self, todo: Sequence[Task], root: str) -> Iterator[dict[str, Any]]:
        """The tasks' results in completion order: serial and thread executors share the
        roles and attempt hook of this process; process and Ray workers rebuild them from the
        config (:func:`run_one`)."""
        from clinfuse.core.executor import run_tasks

        cfg = self.config
        if cfg.executor in ("serial", "thread"):
            from clinfuse.builders.medbanana.roles import make_roles

            roles = make_roles(cfg, root)
            yield from run_tasks(
                run_task,
                todo,
                args=(cfg, root, roles, self.attempt_hook),
                executor=cfg.executor,
                workers=cfg.workers,
            )
            return
        yield from run_tasks(
            run_one,
            [t.to_dict() for t in todo],
            args=(asdict(cfg), root),
            executor=cfg.executor,
            workers=cfg.workers,
            ray_address=cfg.ray_address,
        )

    # -- build --------------------------------------------------------------------------------
    def build(self, run: RunDir, *, resume: bool = False) -> DatasetCard:
        from tqdm.auto import tqdm

        cfg = self.config
        root = run.path
        tasks = self.tasks(run)
        if (root / TASKS).exists() and not resume and records.read_jsonl(root / TASKS):
            raise ConfigError(
                f"{root} already holds finished tasks",
                expected="a new --out, or --resume",
                fix="add --resume to continue this build",
            )
        done = resume_state(root, {t.task_id for t in tasks})
        todo = [t for t in tasks if t.task_id not in done]
        skipped = len(tasks) - len(todo)
        log.info("medbanana: %d tasks, %d done, %d to run", len(tasks), skipped, len(todo))
        t0 = time.perf_counter()
        n_ok = n = 0
        bar = tqdm(
            total=len(todo),
            desc="medbanana",
            unit="task",
            disable=not progress_enabled(cfg.progress),
        )
        for res in self._results(todo, str(root)):
            n += 1
            n_ok += res["status"] == "success"
            bar.update(1)
            now = progress_stats(n, n_ok, time.perf_counter() - t0)
            bar.set_postfix(
                {
                    "tasks_per_min": f"{now['tasks_per_min']:.1f}",
                    "success_rate": f"{now['success_rate']:.0%}",
                }
            )
        bar.close()
        seconds = time.perf_counter() - t0
        speed = progress_stats(n, n_ok, seconds)["tasks_per_min"]
        card = self.assemble(run, skipped)  # its success_rate counts every finished task
        card.stats.update(build_seconds=seconds, tasks_per_min=speed)
        card.write(root)
        run.write_metrics(
            {
                "n_run_now": n,
                "n_success_now": n_ok,
                "build_seconds": seconds,
                "tasks_per_min": speed,
                **self.evaluate(run),
            }
        )
        self._plot(run)
        log.info("medbanana data set written to %s", root)
        return card

    def assemble(self, run: RunDir, skipped: int = 0) -> DatasetCard:
        """Parquet manifests and the card, rebuilt from the logs (never duplicated)."""
        root = run.path
        t = pd.DataFrame(records.read_jsonl(root / TASKS))
        a = pd.DataFrame(records.read_jsonl(root / ATTEMPTS))
        if len(t):
            t = t.drop_duplicates("task_id", keep="last").sort_values("task_id", ignore_index=True)
        if len(a):
            for col in ("instruction", "image", "reason", "reason_code"):
                a[col] = a[col] if col in a else None
            a = a.drop_duplicates(["task_id", "round"], keep="last")
            a = a[a["task_id"].isin(set(t["task_id"]))].sort_values(
                ["task_id", "round"], ignore_index=True
            )
        tables = {"tasks": t, "attempts": a}
        if len(t) and len(a):
            tables.update(
                preference_pairs=preference.image_pairs(a, t),
                prompt_pairs=preference.prompt_pairs(a, t),
                kto=preference.kto_rows(a, t),
            )
        for name, df in tables.items():
            with atomic_path(root / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        ok = t[t["status"] == "success"] if len(t) else t
        bad = t[t["status"] != "success"] if len(t) else t
        stats = {
            "tasks": float(len(t)),
            "success_rate": float(len(ok) / len(t)) if len(t) else 0.0,
            "attempts": float(len(a)),
            "failed_attempts": float((~a["qualified"].astype(bool)).sum()) if len(a) else 0.0,
            "mean_rounds": float(t["rounds"].mean()) if len(t) else 0.0,
            **{
                f"{k}_rows": float(len(v))
                for k, v in tables.items()
                if k not in ("tasks", "attempts")
            },
        }
        return DatasetCard(
            name="medbanana",
            root=str(root),
            n_records=len(ok),
            n_failed=len(bad),
            n_skipped=skipped,
            components={
                "accepted images": "images/accepted/<dataset>/<disease>/<task>.png",
                "failed attempts": "images/failed/<dataset>/<disease>/<task>-r<round>.png",
                "attempt log": f"{ATTEMPTS} (append-only; one line per attempt)",
                "task log": f"{TASKS} (append-only; one line per finished task)",
                "conversations": f"{CONVERSATIONS}/<task>.json (requests, replies, model ids, "
                "prompt hashes)",
                "manifests": "tasks|attempts|preference_pairs|prompt_pairs|kto.parquet",
            },
            stats=stats,
            failures={r["task_id"]: str(r["last_reason"]) for r in bad.to_dict("records")},
            notes=(
                "Tasks: add (normal image x disease) and remove (diseased -> normal). Every "
                "attempt is judged on a rubric (compliance, structure, realism, fidelity) plus "
                "local image metrics; `qualified` is recomputed from the configured thresholds. "
                "Read with pandas (`pd.read_parquet('attempts.parquet')`) or Hugging Face "
                "datasets (`load_dataset('parquet', data_files='preference_pairs.parquet')`). "
                "Images edited by `medbanana-local-editor-v1` are seeded simulations, not "
                "model edits."
            ),
        )

    def evaluate(self, run: RunDir) -> dict[str, float]:
        """Consistency of a built data set: every image on disk, no duplicate task or attempt,
        each success has exactly one qualified attempt, its last."""
        p = run.path
        if not (p / "tasks.parquet").exists():
            return {}
        t, a = pd.read_parquet(p / "tasks.parquet"), pd.read_parquet(p / "attempts.parquet")
        imgs = list(a.get("image", pd.Series(dtype=object)).dropna())
        out = {
            "n_tasks": float(len(t)),
            "success_rate": float((t["status"] == "success").mean()) if len(t) else 0.0,
            "duplicate_tasks": float(t["task_id"].duplicated().sum()) if len(t) else 0.0,
            "duplicate_attempts": float(a.duplicated(["task_id", "round"]).sum())
            if len(a)
            else 0.0,
            "share_images_present": float(sum((p / x).exists() for x in imgs) / len(imgs))
            if imgs
            else 1.0,
        }
        if len(a):
            q = a.groupby("task_id")["qualified"].agg(lambda s: int(s.astype(bool).sum()))
            out["share_success_consistent"] = float(
                all(
                    q.get(tid, 0) == int(st == "success")
                    for tid, st in zip(t["task_id"], t["status"], strict=True)
                )
            )
        return out

    def _plot(self, run: RunDir) -> list[Any]:
        """``plots/examples.png``: source | failed rounds | accepted, one row per success."""
        from PIL import Image

        t = pd.read_parquet(run.path / "tasks.parquet")
        a = pd.read_parquet(run.path / "attempts.parquet")
        rows = []
        for r in t[t["status"] == "success"].head(4).to_dict("records"):
            imgs = a[(a["task_id"] == r["task_id"]) & a["image"].notna()]["image"].tolist()
            if r["image"].lower().endswith((".png", ".jpg", ".jpeg")):
                rows.append([r["image"], *[str(run.path / x) for x in imgs]])
        if not rows:
            return []
        s = 160
        cols = max(len(r) for r in rows)
        sheet = Image.new("RGB", (cols * s, len(rows) * s), "white")
        for i, row in enumerate(rows):
            for j, f in enumerate(row):
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    im.thumbnail((s, s))
                    sheet.paste(im, (j * s, i * s))
        with atomic_path(run.plots / "examples.png") as tmp:
            sheet.save(tmp, format="PNG")
        return [run.plots / "examples.png"]

    def demo(self, run: RunDir, card: DatasetCard) -> DemoResult:
        m = run.read_metrics()
        return DemoResult(
            system="medbanana",
            data="default (3 packaged real images + seeded diseased copies, local backend)",
            metric="tasks accepted",
            value=float(card.n_records),
            baseline="tasks",
            baseline_value=float(card.n_records + card.n_failed),
            extra={
                k: float(v)
                for k, v in {**card.stats, **m}.items()
                if k
                in (
                    "success_rate",
                    "mean_rounds",
                    "failed_attempts",
                    "preference_pairs_rows",
                    "tasks_per_min",
                )
            },
            plots=sorted(run.plots.glob("*.png")),
            notes=f"Data set card: {run.path / 'dataset_card.md'}",
        )
