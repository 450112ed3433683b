"""Preference data from the attempts (the official repository has no code for it).

* :func:`image_pairs`: a task accepted at round k > 1 gives k - 1 rows (source, instruction,
  chosen = the accepted image, rejected = a failed round's image), for editor DPO.
* :func:`prompt_pairs`: for the refiner, the accepted instruction over each failed one of the
  same task, with the judge's reason for the failure.
* :func:`kto_rows`: every judged image unpaired, label True (accepted) / False (failed) with the
  reason: the tasks that never succeed still give negatives.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["image_pairs", "kto_rows", "prompt_pairs"]

_KEYS = ["task_id", "dataset", "modality", "disease", "direction"]


def _split(attempts: pd.DataFrame, tasks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    won = tasks[tasks["status"] == "success"].set_index("task_id")
    a = attempts[attempts["task_id"].isin(won.index)]
    return won, a[~a["qualified"].astype(bool)]


def image_pairs(attempts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """(source, instruction, chosen, rejected) rows; only failed rounds that produced an image."""
    won, failed = _split(attempts, tasks)
    failed = failed[failed["image"].notna()]
    rows = [
        {
            **{k: f[k] for k in _KEYS},
            "source": won.at[f["task_id"], "image"],
            "instruction": won.at[f["task_id"], "final_instruction"],
            "chosen": won.at[f["task_id"], "accepted_image"],
            "rejected": f["image"],
            "rejected_round": int(f["round"]),
            "rejected_instruction": f["instruction"],
            "rejected_reason": f["reason"],
        }
        for f in failed.to_dict("records")
    ]
    cols = [
        *_KEYS,
        "source",
        "instruction",
        "chosen",
        "rejected",
        "rejected_round",
        "rejected_instruction",
        "rejected_reason",
    ]
    return pd.DataFrame(rows, columns=cols).sort_values(
        ["task_id", "rejected_round"], ignore_index=True
    )


def prompt_pairs(attempts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """(task context, chosen instruction, rejected instruction, reason) rows for the refiner."""
    won, failed = _split(attempts, tasks)
    failed = failed[failed["instruction"].notna()]
    rows = [
        {
            **{k: f[k] for k in _KEYS},
            "source": won.at[f["task_id"], "image"],
            "chosen": won.at[f["task_id"], "final_instruction"],
            "rejected": f["instruction"],
            "rejected_round": int(f["round"]),
            "rejected_reason": f["reason"],
        }
        for f in failed.to_dict("records")
    ]
    cols = [*_KEYS, "source", "chosen", "rejected", "rejected_round", "rejected_reason"]
    return pd.DataFrame(rows, columns=cols).sort_values(
        ["task_id", "rejected_round"], ignore_index=True
    )


def kto_rows(attempts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """Unpaired (source, instruction, image, label, reason) rows of every judged image."""
    src = tasks.set_index("task_id")["image"]
    a = attempts[attempts["image"].notna()]
    out = pd.DataFrame(
        {
            **{k: a[k] for k in _KEYS},
            "source": a["task_id"].map(src),
            "instruction": a["instruction"],
            "completion": a["image"],
            "label": a["qualified"].astype(bool),
            "round": a["round"].astype(int),
            "reason_code": a["reason_code"],
            "reason": a["reason"],
        }
    )
    return out.sort_values(["task_id", "round"], ignore_index=True)
