"""Save and load :class:`~clinfuse.rl.data.Trajectories` as Parquet or NumPy ``.npz`` files.

The format follows the file suffix:

``.parquet``
    One row per step with the columns ``patient``, ``time``, ``action``, ``reward``, ``done``,
    ``timeout``, one column per state feature (the feature names, or ``obs_0 .. obs_{D-1}`` when
    there are none or they clash with another column) and, when a mask is stored,
    ``mask_0 .. mask_{A-1}``. ``n_actions``, the feature names, the observation columns and the
    JSON-serialisable part of ``meta`` go in the schema metadata under the key
    ``clinfuse.rl``. A Parquet file written by other tools (no such metadata) is read with the
    observation columns = every column that is not a step or mask column, and ``n_actions`` =
    the number of mask columns, else ``max(action) + 1``.
``.npz``
    The arrays under their field names plus ``header``, a JSON string holding ``n_actions``,
    ``feature_names`` and ``meta``; read with ``allow_pickle=False`` (no code runs on load).

Writes are atomic (a temporary file beside the target, then one rename): a failed or killed
write leaves the previous file as it was. Round trips are exact (dtypes are kept). Only the
JSON-serialisable entries of ``meta`` are saved (NumPy scalars and arrays become numbers and
lists, tuples become lists); the others are dropped with a warning.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clinfuse.core.errors import DataError, reads_untrusted
from clinfuse.core.runs import atomic_path
from clinfuse.rl.data import Trajectories

__all__ = ["STEP_COLUMNS", "load_trajectories", "save_trajectories"]

log = logging.getLogger(__name__)

STEP_COLUMNS: dict[str, type] = {
    "patient": np.int64,
    "time": np.float64,
    "action": np.int64,
    "reward": np.float32,
    "done": np.bool_,
    "timeout": np.bool_,
}
"""Per-step columns every file holds, with the dtype they are stored and loaded in."""

META_KEY = b"clinfuse.rl"
"""Parquet schema-metadata key of the JSON header."""

FORMAT_VERSION = 1


# -- header ----------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (NumPy scalars/arrays converted); TypeError if impossible."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_meta(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in meta.items():
        try:
            out[str(key)] = _jsonable(value)
            json.dumps(out[str(key)], allow_nan=True)
        except (TypeError, ValueError):
            out.pop(str(key), None)
            dropped.append(str(key))
    if dropped:
        log.warning("meta entries not saved (not JSON-serialisable): %s", dropped)
    return out


def _header(traj: Trajectories, obs_columns: list[str] | None = None) -> str:
    head: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "n_actions": int(traj.n_actions),
        "feature_names": None if traj.feature_names is None else list(traj.feature_names),
        "has_mask": traj.mask is not None,
        "meta": _json_meta(traj.meta),
    }
    if obs_columns is not None:
        head["obs_columns"] = obs_columns
    return json.dumps(head)


def _parse_header(text: str | bytes, path: Path) -> dict[str, Any]:
    try:
        head = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: the clinfuse header is not valid JSON",
            expected="the header save_trajectories wrote",
            found=str(exc),
            fix="re-save the trajectories with Trajectories.save",
        ) from None
    if not isinstance(head, dict) or "n_actions" not in head:
        raise DataError(
            f"{path}: the clinfuse header has no 'n_actions'",
            expected="keys format, n_actions, feature_names, meta",
            found=sorted(head) if isinstance(head, dict) else type(head).__name__,
            fix="re-save the trajectories with Trajectories.save",
        )
    return head


def _missing(path: Path, what: str, name: str, available: list[str]) -> DataError:
    return DataError(
        f"{path} has no {what} {name!r}",
        expected=f"the {what}s written by Trajectories.save, {name!r} among them",
        found=f"{what}s {available}",
        fix=f"write the file with Trajectories.save, or add the {what} {name!r}",
    )


# -- parquet ---------------------------------------------------------------------------------
def _obs_columns(traj: Trajectories) -> list[str]:
    """The feature names when they are usable column names, else ``obs_0 .. obs_{D-1}``."""
    names = traj.feature_names
    default = [f"obs_{j}" for j in range(traj.obs_dim)]
    if names is None or len(names) != traj.obs_dim:
        return default
    taken = set(STEP_COLUMNS) | {f"mask_{a}" for a in range(traj.n_actions)}
    if len(set(names)) != len(names) or taken & set(names):
        log.warning("feature names clash with step/mask columns; writing obs_0..obs_%d", len(names))
        return default
    return list(names)


def _save_parquet(traj: Trajectories, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    obs_cols = _obs_columns(traj)
    columns: dict[str, np.ndarray] = {k: getattr(traj, k) for k in STEP_COLUMNS}
    columns.update({c: np.ascontiguousarray(traj.obs[:, j]) for j, c in enumerate(obs_cols)})
    if traj.mask is not None:
        columns.update(
            {f"mask_{a}": np.ascontiguousarray(traj.mask[:, a]) for a in range(traj.n_actions)}
        )
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    table = table.replace_schema_metadata({META_KEY: _header(traj, obs_cols).encode("utf-8")})
    pq.write_table(table, tmp)


def _load_parquet(path: Path) -> Trajectories:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path} is not a readable Parquet file",
            expected="a file written by Trajectories.save",
            found=f"{type(exc).__name__}: {exc}",
            fix="re-save it; a truncated file means an interrupted copy",
        ) from None
    available = table.column_names
    raw = (table.schema.metadata or {}).get(META_KEY)
    head = _parse_header(raw, path) if raw is not None else None
    for name in STEP_COLUMNS:
        if name not in available:
            raise _missing(path, "column", name, available)
        if table.column(name).null_count:
            raise DataError(
                f"{path}: column {name!r} has {table.column(name).null_count} missing values",
                expected="a value in every step column",
                found="nulls",
                fix="drop or fill those rows before building trajectories",
            )
    col = {name: table.column(name).to_numpy() for name in available}
    mask_cols = [c for c in available if c.startswith("mask_")]
    if head is None:  # a file from another tool: infer the layout
        obs_cols = [c for c in available if c not in STEP_COLUMNS and not c.startswith("mask_")]
        actions = col["action"]
        n_actions = len(mask_cols) or (int(actions.max()) + 1 if len(actions) else 1)
        head = {"n_actions": n_actions, "feature_names": obs_cols, "has_mask": bool(mask_cols)}
        log.info(
            "%s has no clinfuse metadata: %d features, %d actions", path, len(obs_cols), n_actions
        )
    else:
        n_features = len(head.get("feature_names") or [])
        obs_cols = head.get("obs_columns") or [f"obs_{j}" for j in range(n_features)]
    n_actions = int(head["n_actions"])
    wanted_masks = [f"mask_{a}" for a in range(n_actions)] if head.get("has_mask") else []
    for name in [*obs_cols, *wanted_masks]:
        if name not in available:
            raise _missing(path, "column", name, available)
    for name in obs_cols:
        if not (np.issubdtype(col[name].dtype, np.number) or col[name].dtype == bool):
            raise DataError(
                f"{path}: feature column {name!r} is not numeric",
                expected="numeric state features",
                found=f"dtype {col[name].dtype}",
                fix="encode categorical features as numbers before saving",
            )
    n = table.num_rows
    obs = (
        np.stack([col[c] for c in obs_cols], axis=1).astype(np.float32, copy=False)
        if obs_cols
        else np.zeros((n, 0), np.float32)
    )
    mask = np.stack([col[c] for c in wanted_masks], axis=1) if wanted_masks else None
    names = head.get("feature_names")
    return Trajectories.from_unsorted(
        obs=obs,
        mask=mask,
        n_actions=n_actions,
        feature_names=None if names is None else tuple(names),
        meta=dict(head.get("meta") or {}),
        **{k: np.asarray(col[k]).astype(dtype, copy=False) for k, dtype in STEP_COLUMNS.items()},
    )


# -- npz -------------------------------------------------------------------------------------
NPZ_ARRAYS: tuple[str, ...] = ("obs", *STEP_COLUMNS)
"""Arrays every ``.npz`` file holds (plus ``mask`` when stored, and ``header``)."""


def _save_npz(traj: Trajectories, tmp: Path) -> None:
    arrays = {k: getattr(traj, k) for k in NPZ_ARRAYS}
    if traj.mask is not None:
        arrays["mask"] = traj.mask
    arrays["header"] = np.array(_header(traj))
    with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
        np.savez_compressed(fh, **arrays)


def _load_npz(path: Path) -> Trajectories:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file of trajectories",
            expected="a file written by Trajectories.save (no pickled objects)",
            found=f"{type(exc).__name__}: {exc}",
            fix="re-save it; a truncated file means an interrupted copy",
        ) from None
    for name in (*NPZ_ARRAYS, "header"):
        if name not in arrays:
            raise _missing(path, "array", name, sorted(arrays))
    head = _parse_header(str(arrays.pop("header")), path)
    if head.get("has_mask") and "mask" not in arrays:
        raise _missing(path, "array", "mask", sorted(arrays))
    names = head.get("feature_names")
    return Trajectories(
        obs=arrays["obs"],
        mask=arrays.get("mask"),
        n_actions=int(head["n_actions"]),
        feature_names=None if names is None else tuple(names),
        meta=dict(head.get("meta") or {}),
        **{k: arrays[k] for k in STEP_COLUMNS},
    )


# -- dispatch --------------------------------------------------------------------------------
Writer = Callable[[Trajectories, Path], None]
Reader = Callable[[Path], Trajectories]

FORMATS: dict[str, tuple[Writer, Reader]] = {
    ".parquet": (_save_parquet, _load_parquet),
    ".npz": (_save_npz, _load_npz),
}
"""File suffix -> (writer of a temporary path, reader)."""


def _format(path: Path) -> tuple[Writer, Reader]:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown trajectory file format {path.suffix or '(no suffix)'!r}",
            expected=f"a path ending in one of {sorted(FORMATS)}",
            found=path.suffix or "no suffix",
            fix="name the file e.g. trajectories.parquet or trajectories.npz",
        )
    return fmt


def save_trajectories(traj: Trajectories, path: str | Path) -> Path:
    """Write ``traj`` atomically to ``path`` (format by suffix: ``.parquet`` or ``.npz``).

    Example:
        >>> import tempfile, numpy as np
        >>> t = Trajectories(obs=np.zeros((2, 1)), action=[0, 1], reward=[0.0, 1.0],
        ...                  done=[False, True], timeout=[False, False], patient=[7, 7],
        ...                  time=[0.0, 4.0], n_actions=2)
        >>> p = save_trajectories(t, Path(tempfile.mkdtemp()) / "t.npz")
        >>> load_trajectories(p).reward.tolist()
        [0.0, 1.0]
    """
    path = Path(path)
    write, _ = _format(path)
    with atomic_path(path) as tmp:
        write(traj, tmp)
    log.debug("saved %s to %s", traj.summary(), path)
    return path


@reads_untrusted("a .parquet or .npz file written by Trajectories.save")
def load_trajectories(path: str | Path) -> Trajectories:
    """Read trajectories written by :func:`save_trajectories` (validated on load)."""
    path = Path(path)
    _, read = _format(path)
    if not path.is_file():
        raise DataError(
            f"trajectory file {path} does not exist",
            expected="a .parquet or .npz file written by Trajectories.save",
            found="no such file" if not path.exists() else "a directory",
            fix="check the path (relative paths start at the working directory)",
        )
    return read(path)
