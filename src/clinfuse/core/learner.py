"""The learner shape every method follows, and the registry that ``clinfuse ls`` reads."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clinfuse.core.config import config_from_dict
from clinfuse.core.errors import ConfigError
from clinfuse.core.registry import Registry
from clinfuse.core.runs import RunDir

METHODS: Registry[type[Learner]] = Registry("method")


def check_split(split: str, known: Iterable[str]) -> str:
    """``split`` when it is one of ``known`` (names, or the keys of a mapping of splits); else a
    :class:`ConfigError` naming the known splits. Learners call it in ``evaluate`` / ``predict``
    before any model runs.

    Example:
        >>> check_split("test", {"train": [0], "test": [1]})
        'test'
        >>> check_split("dev", ("train", "test"))
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.ConfigError: unknown split 'dev'
          expected: one of train | test
          found:    'dev'
          fix:      --split train (or another split above)
    """
    names = [str(k) for k in known]
    if split not in names:
        raise ConfigError(
            f"unknown split {split!r}",
            expected="one of " + " | ".join(names),
            found=repr(split),
            fix=f"--split {names[0] if names else 'test'} (or another split above)",
        )
    return split


@dataclass
class DemoResult:
    """One row of the demo report: a system's main metric next to its baseline, and its plots."""

    system: str
    data: str
    metric: str
    value: float
    baseline: str
    baseline_value: float
    higher_is_better: bool = True
    extra: dict[str, float] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    notes: str = ""


class Learner(abc.ABC):
    """Base of the methods: ``fit(data, run) -> self``, ``evaluate``, ``predict``, ``state_dict``.

    Subclasses set ``name``, ``config_cls``, ``description`` and implement the methods below.
    ``corrupt`` is a corruption spec string (see :mod:`clinfuse.robustness`).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    status: ClassVar[str] = ""
    """What works and what is missing, in one line (the systems table of the README)."""
    demo_preset: ClassVar[str] = "quick"

    def __init__(self, config: Any) -> None:
        self.config = config

    # -- to implement --------------------------------------------------------------------
    @abc.abstractmethod
    def load_data(self, path: str | None = None) -> Any:
        """The data named by ``path`` (a file/directory) or, when None, by the config."""

    @abc.abstractmethod
    def fit(self, data: Any, run: RunDir, *, resume: bool = False) -> Learner: ...

    @abc.abstractmethod
    def evaluate(self, data: Any, split: str = "test", corrupt: str | None = None) -> dict: ...

    @abc.abstractmethod
    def predict(self, data: Any, split: str = "test") -> Any: ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def demo(self, data: Any, run: RunDir) -> DemoResult:
        """Run after ``fit`` on the quick preset: the row and plots of the demo report."""

    # -- optional capabilities (the CLI calls these; the defaults say "none") ------------
    def report_table(self) -> str:
        """The method's own summary table after ``evaluate`` (e.g. a policy comparison); ``""``
        when it has none and the CLI prints the metrics instead."""
        return ""

    def write_report(self, folder: str | Path) -> list[Path]:
        """Tables and plots of the last ``evaluate`` written under ``folder``; the paths
        written (none by default)."""
        return []

    def write_prediction_report(
        self, data: Any, split: str, folder: str | Path, n_cases: int = 5
    ) -> list[Path]:
        """Per-case figures of ``n_cases`` predictions under ``folder``; the paths written
        (none by default)."""
        return []

    def predict_explained(self, data: Any, split: str = "test") -> Any:
        """``predict`` with an ``explanation`` column (the evidence behind each answer), for
        methods that can explain; the others refuse."""
        raise ConfigError(
            f"{self.name} has no explanations",
            expected="a method that explains its predictions (e.g. tunsr)",
            found=self.name,
            fix="drop --explain",
        )

    def arena(self, folder: str | Path) -> tuple[str, list[Path]]:
        """A pairwise LLM-judge leaderboard of the method's outputs: (table, paths written)
        under ``folder``, for methods that have one; the others refuse."""
        raise ConfigError(
            f"{self.name} has no Report Arena",
            expected="a method with an arena (e.g. deepmedix)",
            found=self.name,
            fix="drop --arena",
        )

    # -- shared --------------------------------------------------------------------------
    def _require_model(self) -> Any:
        """``self.model``, or a clear error when the learner is neither trained nor loaded."""
        model = getattr(self, "model", None)
        if model is None:
            name = type(self).__name__
            raise ConfigError(
                f"the {name} model is not trained or loaded",
                expected=f"fit() or {name}.from_run(run)",
                found="no model",
                fix="call fit first, or load a run",
            )
        return model

    @classmethod
    def from_run(cls, run: RunDir, checkpoint: str = "best") -> Learner:
        """Rebuild the learner saved in ``run`` from its config.json and checkpoint."""
        config = config_from_dict(cls.config_cls, run.config_dict())
        learner = cls(config)
        learner.load_state_dict(run.load_checkpoint(checkpoint))
        return learner
