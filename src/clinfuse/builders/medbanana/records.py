"""Append-only, crash-safe logs and the image files of a build.

``attempts.jsonl`` and ``tasks.jsonl`` grow by whole lines: each record is one ``os.write`` on an
``O_APPEND`` descriptor followed by ``fsync``, under a process lock (threads) and with POSIX
append semantics (processes on one machine; a Ray cluster needs a shared POSIX file system). A
killed writer can leave at most a torn last line; :func:`read_jsonl` skips it and
:func:`rewrite_jsonl` (resume) drops it atomically. A task is finished when its line is in
``tasks.jsonl``, written after its attempts, images and conversation.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from clinfuse.core.paths import remove_created, slug
from clinfuse.core.runs import atomic_path, atomic_write_text, json_default

__all__ = ["append_jsonl", "image_path", "read_jsonl", "rewrite_jsonl", "save_image"]

_LOCK = threading.Lock()


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (one write, fsynced)."""
    line = (json.dumps(record, sort_keys=True, default=json_default) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of a JSONL log (a torn or invalid line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def rewrite_jsonl(
    path: str | Path, keep: Callable[[dict[str, Any]], bool]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Atomically rewrite ``path`` with the complete records ``keep`` accepts; return (kept,
    dropped)."""
    records = read_jsonl(path)
    kept = [r for r in records if keep(r)]
    dropped = [r for r in records if not keep(r)]
    if Path(path).exists():
        atomic_write_text(path, "".join(_line(r) for r in kept))
    return kept, dropped


def _line(r: dict[str, Any]) -> str:
    return json.dumps(r, sort_keys=True, default=json_default) + "\n"


def image_path(task_id: str, dataset: str, disease: str, rnd: int | None, fmt: str = "png") -> Path:
    """``images/accepted/<dataset>/<disease>/<task>.png`` (``rnd=None``) or
    ``images/failed/<dataset>/<disease>/<task>-r<round>.png`` (relative to the build root)."""
    ext = "jpg" if fmt == "jpeg" else "png"
    kind, name = (
        ("accepted", f"{slug(task_id)}.{ext}")
        if rnd is None
        else ("failed", f"{slug(task_id)}-r{int(rnd)}.{ext}")
    )
    return Path("images") / kind / slug(dataset) / slug(disease) / name


def save_image(img: Image.Image, path: str | Path, fmt: str = "png") -> Path:
    """Write ``img`` atomically (PNG, or JPEG q95)."""
    with atomic_path(path) as tmp:
        if fmt == "jpeg":
            img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(
                tmp, format="JPEG", quality=95
            )
        else:
            img.save(tmp, format="PNG")
    return Path(path)


def remove_files(root: Path, rels: Iterable[tuple[str | None, str | None]]) -> int:
    """Delete the files ``(rel, sha256)`` this build wrote: only under ``root`` and only when
    the file still has the recorded hash (:func:`clinfuse.core.paths.remove_created`); return
    how many went. A log line naming any other file deletes nothing."""
    return sum(remove_created(root, rel, sha) for rel, sha in rels)
