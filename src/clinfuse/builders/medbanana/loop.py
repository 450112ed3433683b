"""One task through the loop of the official code (``add_disease.py`` of
github.com/richardChenzhihui/med-banana-50k@9d1b8ce), with a judge that also sees the source:
write -> edit -> judge, up to ``max_rounds``; every round edits the **original source**; from
round 2 the refiner sees the source and the history of every instruction and verdict; stop when
qualified.

Every attempt, failed ones included, is appended to ``attempts.jsonl`` with its image; the full
conversation (requests with images by hash, replies, model ids, prompt hashes) goes to
``conversations/<task>.json``; the task's line in ``tasks.jsonl`` comes last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clinfuse.builders.medbanana.local import allowed_region, task_seed
from clinfuse.builders.medbanana.records import append_jsonl, image_path, save_image
from clinfuse.builders.medbanana.roles import AttemptError, HistoryEntry, Roles
from clinfuse.builders.medbanana.sources import load_image, load_mask, to_array
from clinfuse.builders.medbanana.tasks import Task
from clinfuse.core.errors import DataError
from clinfuse.core.paths import file_sha256, output_path, slug
from clinfuse.core.runs import atomic_write_json

__all__ = ["ATTEMPTS", "CONVERSATIONS", "TASKS", "run_task"]

ATTEMPTS = "attempts.jsonl"
TASKS = "tasks.jsonl"
CONVERSATIONS = "conversations"


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def run_task(
    task: Task,
    cfg: Any,
    root: str | Path,
    roles: Roles,
    on_attempt: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``task`` to its end and return its ``tasks.jsonl`` record.

    Bad input (unreadable image, undecodable DICOM, a mask outside the image) and role failures
    (a call that raised, a reply that is not JSON or has no image) become failed attempts with
    their reason; nothing is raised for them.
    """
    root = Path(root)
    t0 = time.perf_counter()
    base = {k: getattr(task, k) for k in ("task_id", "dataset", "modality", "disease", "direction")}
    conv: dict[str, Any] = {
        **task.to_dict(),
        "models": {r: getattr(roles, r).model_id for r in ("writer", "editor", "judge")},
        "rounds": [],
    }
    history: list[HistoryEntry] = []
    status, accepted, final = "failed", None, None

    def record(rec: dict[str, Any], extra: dict[str, Any]) -> None:
        rec = _clean(rec)
        append_jsonl(root / ATTEMPTS, rec)
        conv["rounds"].append({**rec, **extra})
        if on_attempt is not None:
            on_attempt(rec)

    try:
        source = load_image(task.image, cfg.max_side)
        mask = load_mask(task.mask, source.size, source.info.get("orig_size"))
    except DataError as exc:
        code = "bad_mask" if "mask" in exc.message else "bad_source"
        why = str(exc).splitlines()[0]
        record(
            {
                **base,
                "round": 1,
                "qualified": False,
                "reason_code": code,
                "reason": why,
                "image": None,
                "instruction": None,
            },
            {},
        )
        status = "error"
    else:
        allowed = allowed_region(task, to_array(source), mask)
        for rnd in range(1, cfg.max_rounds + 1):
            rec: dict[str, Any] = {**base, "round": rnd, "instruction": None, "image": None}
            extra: dict[str, Any] = {}
            try:
                w = (
                    roles.writer.initial(task, source)
                    if rnd == 1
                    else roles.writer.refine(task, source, history)
                )
                rec.update(
                    instruction=w.instruction,
                    writer_model=w.model_id,
                    writer_prompt_hash=w.prompt_hash,
                )
                extra.update(writer_request=w.request, writer_reply=w.reply)
                seed = task_seed(cfg.seed, task.task_id, rnd)
                edit = roles.editor.edit(source, w.instruction, seed, task=task, mask=mask)
                rec.update(
                    editor_model=edit.model_id,
                    editor_prompt_hash=edit.prompt_hash,
                    editor_seed=seed,
                )
                v = roles.judge.judge(task, source, edit.image, allowed)
                rec.update(
                    qualified=v.qualified,
                    reason_code=v.reason_code,
                    reason=v.reason,
                    judge_model=v.model_id,
                    judge_prompt_hash=v.prompt_hash,
                    has_disease=v.has_disease,
                    model_reason=v.model_reason,
                    **v.scores(),
                    **{f"m_{k}": x for k, x in v.metrics.items()},
                )
                extra.update(judge_request=v.request, judge_reply=v.reply)
                rel = image_path(
                    task.task_id,
                    task.dataset,
                    task.disease,
                    None if v.qualified else rnd,
                    cfg.image_format,
                )
                written = save_image(edit.image, output_path(root, rel), cfg.image_format)
                rec.update(image=str(rel), image_sha256=file_sha256(written))
            except AttemptError as exc:
                rec.update(qualified=False, reason_code=exc.code, reason=str(exc))
            record(rec, extra)
            scores = {k: rec.get(k) for k in ("compliance", "structure", "realism", "fidelity")}
            history.append(
                HistoryEntry(
                    rnd,
                    rec["instruction"] or "",
                    bool(rec["qualified"]),
                    rec["reason_code"],
                    rec["reason"],
                    scores,
                )
            )
            if rec["qualified"]:
                status, accepted, final = "success", rec["image"], rec["instruction"]
                break
    done = {
        **base,
        "image": task.image,
        "status": status,
        "rounds": len(conv["rounds"]),
        "final_instruction": final,
        "accepted_image": accepted,
        "last_reason_code": conv["rounds"][-1]["reason_code"] if conv["rounds"] else None,
        "last_reason": conv["rounds"][-1]["reason"] if conv["rounds"] else None,
        **{f"{r}_model": m for r, m in conv["models"].items()},
        "seconds": time.perf_counter() - t0,
    }
    conv.update(status=status, final_instruction=final, accepted_image=accepted)
    atomic_write_json(output_path(root, CONVERSATIONS, f"{slug(task.task_id)}.json"), conv)
    append_jsonl(root / TASKS, done)
    return done
