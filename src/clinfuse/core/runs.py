"""Run directories: config, environment, metrics, predictions, plots, checkpoints; atomic writes.

Layout::

    <run>/config.json        {"clinfuse_run": 1, "method": name, "config": {...}}
    <run>/env.json           versions, git sha, seed, device, time
    <run>/metrics.json       final metrics (merged by later evaluate calls)
    <run>/metrics.csv        one row per epoch
    <run>/predictions.parquet (or .csv)
    <run>/plots/*.png
    <run>/checkpoints/{last,best}.pt   state dicts, loaded with weights_only=True
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from clinfuse.core.errors import RunDirError
from clinfuse.core.paths import file_sha256, remove_created

RUN_MARK = "clinfuse_run"
LOCK_NAME = ".clinfuse.lock"
"""The lock file of a run folder in use (``O_CREAT | O_EXCL``, holds the owner's pid)."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_default(obj: Any) -> Any:
    """The ``default=`` of :func:`json.dumps` for run files: numpy scalars and arrays (``item`` /
    ``tolist``) and paths (``str``); anything else raises :class:`TypeError`.

    Example:
        >>> import numpy as np
        >>> json.dumps({"n": np.int64(3), "p": Path("a/b")}, default=json_default)
        '{"n": 3, "p": "a/b"}'
    """
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_json_default = json_default  # the former private name, kept for existing callers


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    import torch

    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def git_sha() -> str | None:
    """The commit of the source checkout clinfuse runs from, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Versions and machine facts recorded in ``env.json``."""
    import numpy
    import torch

    import clinfuse

    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "clinfuse": getattr(clinfuse, "__version__", None),
        "git_sha": git_sha(),
        "cuda": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "seed": seed,
        "device": device,
        "argv": sys.argv,
    }
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


class RunDir:
    """A run directory. Create one with :meth:`create`, reopen one with :meth:`open`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- creation and validation -------------------------------------------------------------
    @classmethod
    def create(
        cls,
        out: str | Path | None,
        method: str,
        config: Mapping[str, Any],
        *,
        seed: int | None = None,
        device: str | None = None,
        write: bool = True,
        exist_ok: bool = False,
        hold_lock: bool = False,
    ) -> RunDir:
        """Make ``out`` (default ``runs/<method>/<time>``) and write config.json and env.json,
        under the folder's lock (:meth:`acquire`); ``hold_lock=True`` keeps it until
        :meth:`release` (the API holds it for the whole fit or build).

        ``write=False`` (non-main ranks under Accelerate) returns the object without touching disk.
        """
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / method / f"{stamp}-{config.get('preset') or 'custom'}"
        run = cls(out)
        if not write:
            return run
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(
                f"--out {str(run.path)!r} is a file",
                expected="a new or empty --out directory",
                found="a file",
                fix="pass another --out",
            )
        if run.config_path.exists() and not exist_ok:
            raise RunDirError(
                f"{run.path} already holds a clinfuse run",
                expected="a new or empty --out directory",
                found=f"{run.config_path}",
                fix="pass another --out, or --resume to continue that run",
            )
        run._made_dir = not run.path.exists()
        run.path.mkdir(parents=True, exist_ok=True)
        run.acquire()
        try:
            if run.config_path.exists() and not exist_ok:  # written between check and lock
                raise RunDirError(
                    f"{run.path} already holds a clinfuse run",
                    expected="a new or empty --out directory",
                    found=f"{run.config_path}",
                    fix="pass another --out, or --resume to continue that run",
                )
            run._made_subdirs = [
                d for d in (run.path / "plots", run.path / "checkpoints") if not d.exists()
            ]
            for d in run._made_subdirs:
                d.mkdir(parents=True, exist_ok=True)
            meta = {RUN_MARK: 1, "method": method, "config": dict(config)}
            run._created = {
                p.name: file_sha256(p)
                for p in (
                    atomic_write_json(run.config_path, meta),
                    atomic_write_json(run.path / "env.json", environment(seed, device)),
                )
            }
        except BaseException:
            run.release()
            raise
        if not hold_lock:
            run.release()
        return run

    # -- lock --------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def acquire(self) -> RunDir:
        """Take the run folder's lock (an ``O_EXCL`` file holding this pid), or raise
        :class:`RunDirError` when another live process holds it. A lock left by a process
        that no longer exists on this machine is taken over."""
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = _lock_owner(self.lock_path)
                if owner is not None and not _alive(owner):
                    with contextlib.suppress(FileNotFoundError):
                        self.lock_path.unlink()
                    continue
                raise RunDirError(
                    f"{self.path} is in use by another clinfuse process",
                    expected="a run folder no other process holds",
                    found=f"{self.lock_path} (pid {owner if owner is not None else 'unknown'})",
                    fix="wait for that process to end; if none runs, delete the lock file",
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self._locked = True
            return self
        raise RunDirError(f"cannot take the lock {self.lock_path}")  # pragma: no cover

    def release(self) -> None:
        """Give the lock back (only when this object took it)."""
        if getattr(self, "_locked", False):
            self._locked = False
            if _lock_owner(self.lock_path) == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.lock_path.unlink()

    def __enter__(self) -> RunDir:
        if not getattr(self, "_locked", False):
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def discard(self) -> bool:
        """Undo :meth:`create` after a failure that produced nothing: remove config.json and
        env.json (when their hashes are still those written), the empty subfolders and the
        folder it made. A run that saved a checkpoint, metrics or anything else is kept."""
        created = getattr(self, "_created", None)
        if not created:
            return False
        expected = {*created, LOCK_NAME, "plots", "checkpoints"}
        present = {p.name for p in self.path.iterdir()}
        if present - expected or any(
            any(d.iterdir()) for d in (self.path / "plots", self.path / "checkpoints") if d.is_dir()
        ):
            return False
        for name, sha in created.items():
            remove_created(self.path, name, sha)
        for d in getattr(self, "_made_subdirs", []):
            with contextlib.suppress(OSError):
                d.rmdir()
        self.release()
        self._created = {}
        if getattr(self, "_made_dir", False):
            with contextlib.suppress(OSError):
                self.path.rmdir()
        return True

    @classmethod
    def open(cls, path: str | Path, method: str | None = None) -> RunDir:
        """Reopen a run; refuse a path that is not a clinfuse run, or is a run of another method."""
        run = cls(path)
        fix = "pass the directory that `clinfuse fit` printed (it holds config.json)"
        if not run.path.is_dir():
            raise RunDirError(
                f"--run {str(run.path)!r} is not a directory",
                expected="a clinfuse run directory",
                found="no such directory" if not run.path.exists() else "a file",
                fix=fix,
            )
        try:
            meta = json.loads(run.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(
                f"--run {str(run.path)!r} is not a clinfuse run",
                expected="a directory with config.json written by `clinfuse fit`",
                found=f"no config.json (has: {sorted(p.name for p in run.path.iterdir())[:8]})",
                fix=fix,
            ) from None
        except json.JSONDecodeError as exc:
            raise RunDirError(
                f"{run.config_path} is not valid JSON",
                expected="the config.json clinfuse wrote",
                found=str(exc),
                fix=fix,
            ) from None
        if not isinstance(meta, dict) or meta.get(RUN_MARK) != 1 or "config" not in meta:
            raise RunDirError(
                f"--run {str(run.path)!r} is not a clinfuse run",
                expected=f'config.json with "{RUN_MARK}": 1, "method" and "config"',
                found=f"keys {sorted(meta) if isinstance(meta, dict) else type(meta).__name__}",
                fix=fix,
            )
        if method is not None and meta.get("method") != method:
            raise RunDirError(
                f"--run {str(run.path)!r} is a {meta.get('method')!r} run, not {method!r}",
                expected=method,
                found=meta.get("method"),
                fix=f"use `clinfuse evaluate {meta.get('method')} --run {run.path}`",
            )
        return run

    # -- paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def plots(self) -> Path:
        p = self.path / "plots"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def checkpoints(self) -> Path:
        p = self.path / "checkpoints"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def meta(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    @property
    def method(self) -> str:
        return str(self.meta()["method"])

    def config_dict(self) -> dict[str, Any]:
        return dict(self.meta()["config"])

    # -- metrics and predictions -----------------------------------------------------------
    def read_metrics(self) -> dict[str, Any]:
        p = self.path / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    def write_metrics(self, metrics: Mapping[str, Any], *, merge: bool = True) -> Path:
        """Write metrics.json (merged into what is there unless ``merge=False``)."""
        current = self.read_metrics() if merge else {}
        current.update(metrics)
        return atomic_write_json(self.path / "metrics.json", current)

    def read_history(self) -> list[dict[str, str]]:
        p = self.path / "metrics.csv"
        if not p.exists():
            return []
        with open(p, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def log_epoch(self, row: Mapping[str, Any]) -> Path:
        """Append one row to metrics.csv (rewritten atomically; new columns are added)."""
        rows = self.read_history()
        rows.append({k: _fmt(v) for k, v in row.items()})
        cols: list[str] = []
        for r in rows:
            cols.extend(k for k in r if k not in cols)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    def truncate_history(self, last_epoch: int) -> None:
        """Drop metrics.csv rows after ``last_epoch`` (used when resuming from a checkpoint), in
        one atomic rewrite: a kill at any moment leaves the old or the new file, never less."""
        p = self.path / "metrics.csv"
        if not p.exists():
            return
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            rows = [r for r in reader if _epoch(r) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(p, buf.getvalue())

    def write_predictions(self, df: Any, name: str = "predictions") -> Path:
        """Write a DataFrame as Parquet (CSV when pyarrow is missing)."""
        try:
            import pyarrow  # noqa: F401

            with atomic_path(self.path / f"{name}.parquet") as tmp:
                df.to_parquet(tmp, index=False)
            return self.path / f"{name}.parquet"
        except ImportError:  # pragma: no cover
            with atomic_path(self.path / f"{name}.csv") as tmp:
                df.to_csv(tmp, index=False)
            return self.path / f"{name}.csv"

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_path(self, kind: str) -> Path:
        return self.checkpoints / f"{kind}.pt"

    def save_checkpoint(self, kind: str, state: Mapping[str, Any]) -> Path:
        return atomic_torch_save(dict(state), self.checkpoint_path(kind))

    def save_final_checkpoint(self, state: Mapping[str, Any]) -> Path:
        """For a fit whose last state is also its chosen one (a refit, a finished selection):
        ``state`` serialized once as ``last`` and copied to ``best``; the ``best`` path."""
        import shutil

        last = self.save_checkpoint("last", state)
        best = self.checkpoint_path("best")
        with atomic_path(best) as tmp:
            shutil.copyfile(last, tmp)
        return best

    def load_checkpoint(self, kind: str, map_location: Any = "cpu") -> dict:
        p = self.checkpoint_path(kind)
        if not p.exists():
            raise RunDirError(
                f"run {self.path} has no {kind} checkpoint",
                expected=str(p),
                found=f"{sorted(x.name for x in self.checkpoints.iterdir())}",
                fix="the run may have been stopped before its first epoch ended; fit it again",
            )
        import pickle
        import zipfile

        import torch

        try:
            state = torch.load(p, map_location=map_location, weights_only=True)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            EOFError,
            OSError,
            ValueError,
            zipfile.BadZipFile,
            AttributeError,
            TypeError,
            KeyError,
            IndexError,
        ) as exc:
            raise RunDirError(
                f"checkpoint {p} cannot be read safely",
                expected="a state-dict checkpoint written by clinfuse (tensors, numbers, strings)",
                found=_load_failure(exc),
                fix="the file is truncated, corrupted or holds objects other than weights "
                "(it is never loaded with full unpickling); fit the run again",
            ) from None
        if not isinstance(state, dict):
            raise RunDirError(
                f"checkpoint {p} is not a state dict",
                expected="a dict",
                found=type(state).__name__,
                fix="fit the run again",
            )
        return state

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _load_failure(exc: BaseException) -> str:
    """What a refused checkpoint holds, without torch's advice on loading it unsafely."""
    import re

    text = str(exc)
    found = re.search(r"(?:[Uu]nsupported global: |unsupported )GLOBAL ([\w.]+)", text)
    if found:
        return f"a pickled object outside the allow-list: {found.group(1)}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.split(". ")[0][:200]
    if "weights_only" in first or "Weights only" in first:
        return f"{type(exc).__name__}: content the restricted loader refuses"
    return f"{type(exc).__name__}: {first}"


def _epoch(row: Mapping[str, Any]) -> float:
    try:
        return float(row.get("epoch") or 0)
    except ValueError:
        return 0.0


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _fmt(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
