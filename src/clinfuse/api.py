"""Entry points: ``clinfuse.run(name, ...)`` fits a method, ``clinfuse.load(run)`` reloads it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clinfuse.core.builder import BUILDERS, Builder, DatasetCard
from clinfuse.core.config import (
    check_bounds,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
)
from clinfuse.core.learner import METHODS, Learner
from clinfuse.core.loop import is_distributed_launch, resolve_device
from clinfuse.core.runs import RunDir

log = logging.getLogger(__name__)


def get_method(name: str) -> type[Learner]:
    from clinfuse.methods import load_all

    load_all()
    return METHODS.get(name)


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _agree_on_path(out: Path, device: str = "auto") -> Path:
    """Under a distributed launch, every rank uses the main process's run path."""
    if not is_distributed_launch():
        return out
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # the same `cpu` flag as make_accelerator, or Accelerate sets up a non-distributed state
    PartialState(cpu=resolve_device(device).type == "cpu")
    box = [str(out)]
    broadcast_object_list(box, from_process=0)
    return Path(box[0])


def make_config(
    name: str,
    config: Any = None,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> Any:
    """A validated config of method ``name``: a config object, or preset/file/overrides."""
    cls = get_method(name)
    if config is not None:
        if overrides:
            base = config_to_dict(config)
            base.update(
                parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides
            )
            return config_from_dict(cls.config_cls, base)
        check_bounds(config)
        return config
    if preset is None and config_file is None:
        preset = cls.demo_preset
    return load_config(
        cls.config_cls, method=name, preset=preset, path=config_file, overrides=overrides
    )


def run(
    name: str,
    config: Any = None,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    data: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> tuple[Learner, RunDir]:
    """Fit method ``name`` and evaluate it; return the learner and its run directory.

    With ``resume=True``, ``out`` must be an existing run: its saved config is reused (overrides
    such as ``epochs=...`` apply on top) and training continues from ``checkpoints/last.pt``.
    """
    cls = get_method(name)
    if resume:
        rd = _open_to_resume(out, name, "fit")
        saved = config_from_dict(cls.config_cls, rd.config_dict())
        cfg = make_config(name, saved, overrides=overrides)
    else:
        cfg = make_config(name, config, preset=preset, config_file=config_file, overrides=overrides)
    learner = cls(cfg)
    # the config (bounds included) and the data are validated before anything is written
    dataset = learner.load_data(str(data) if data is not None else None)
    main = _main_process()
    if not resume:
        if out is None:
            import time

            tag = getattr(cfg, "preset", "") or "custom"
            out = Path("runs") / name / f"{time.strftime('%Y%m%d-%H%M%S')}-{tag}"
        out = _agree_on_path(Path(out), getattr(cfg, "device", "auto"))
        rd = RunDir.create(
            out,
            name,
            config_to_dict(cfg),
            seed=getattr(cfg, "seed", None),
            device=getattr(cfg, "device", None),
            write=main,
            hold_lock=True,
        )
    elif main:
        rd.acquire()
    try:
        learner.fit(dataset, rd, resume=resume)
    except BaseException:
        if not resume and main:
            rd.discard()  # a failure before the first checkpoint leaves no half-made run
        raise
    finally:
        rd.release()
    if resume and overrides and main:  # only a resume that succeeded changes config.json
        from clinfuse.core.runs import atomic_write_json

        meta = rd.meta()
        meta["config"] = config_to_dict(cfg)
        atomic_write_json(rd.config_path, meta)
    return learner, rd


def _open_to_resume(out: str | Path | None, name: str, command: str) -> RunDir:
    """The run directory that ``--resume`` continues (``out`` is required)."""
    if out is None:
        from clinfuse.core.errors import RunDirError

        raise RunDirError(
            "--resume needs the run to continue",
            expected="--out <run directory>",
            found="no --out",
            fix=f"clinfuse {command} NAME --out DIR --resume",
        )
    return RunDir.open(out, method=name)


def get_builder(name: str) -> type[Builder]:
    from clinfuse.builders import load_all

    load_all()
    return BUILDERS.get(name)


def build(
    name: str,
    config: Any = None,
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    data: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
) -> tuple[Builder, DatasetCard, RunDir]:
    """Build data set ``name`` into ``out`` (a run directory); return the builder, its card and
    the run. With ``resume=True`` the saved config of ``out`` is reused (overrides on top) and
    finished records are skipped."""
    cls = get_builder(name)
    if data is not None:
        overrides = (
            {**overrides, "data": str(data)}
            if isinstance(overrides, Mapping)
            else [*overrides, f"data={data}"]
        )
    if resume:
        rd = _open_to_resume(out, name, "build")
        saved = config_from_dict(cls.config_cls, rd.config_dict())
        cfg = _builder_config(cls, saved, overrides=overrides)
    else:
        if config is None:
            cfg = load_config(
                cls.config_cls,
                method=name,
                preset=preset or (None if config_file else cls.demo_preset),
                path=config_file,
                overrides=overrides,
            )
        else:
            cfg = _builder_config(cls, config, overrides=overrides)
    builder = cls(cfg)
    builder.prepare()  # inputs are read and checked before the build folder exists
    if resume:
        rd.acquire()
    else:
        if out is None:
            import time

            out = Path("builds") / name / time.strftime("%Y%m%d-%H%M%S")
        rd = RunDir.create(
            out, name, config_to_dict(cfg), seed=getattr(cfg, "seed", None), hold_lock=True
        )
    try:
        card = builder.build(rd, resume=resume)
    except BaseException:
        if not resume:
            rd.discard()
        raise
    finally:
        rd.release()
    return builder, card, rd


def _builder_config(cls: type[Builder], config: Any, overrides: Any) -> Any:
    if not overrides:
        check_bounds(config)
        return config
    base = config_to_dict(config)
    base.update(parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides)
    return config_from_dict(cls.config_cls, base)


def load(run_dir: str | Path, name: str | None = None, checkpoint: str = "best") -> Learner:
    """The learner saved in ``run_dir`` (best checkpoint by default)."""
    rd = RunDir.open(run_dir, method=name)
    cls = get_method(rd.method)
    return cls.from_run(rd, checkpoint)
