"""The builder shape (data set construction systems) and the registry that ``clinfuse ls`` and
``clinfuse build`` read.

A builder turns raw records into a data set inside a run directory: ``build(run) -> DatasetCard``.
Builds are resumable: a record that is finished is never redone, and every write is atomic.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from clinfuse.core.learner import DemoResult
from clinfuse.core.registry import Registry
from clinfuse.core.runs import RunDir, atomic_write_json, atomic_write_text

__all__ = ["BUILDERS", "Builder", "DatasetCard"]


@dataclass
class DatasetCard:
    """What a build produced: counts, where each component lies, and free-form notes."""

    name: str
    root: str
    n_records: int
    n_failed: int = 0
    n_skipped: int = 0
    components: dict[str, str] = field(default_factory=dict)
    """Component name -> path pattern relative to ``root`` (e.g. ``files/p*/p*/s*/<id>.png``)."""
    stats: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    """Record id -> the error that stopped it."""
    notes: str = ""

    def to_markdown(self) -> str:
        lines = [
            f"# Data set card: {self.name}",
            "",
            f"Root: `{self.root}`. Records built: {self.n_records}; failed: {self.n_failed}; "
            f"already done and skipped: {self.n_skipped}.",
            "",
            "| component | files |",
            "|---|---|",
            *[f"| {k} | `{v}` |" for k, v in self.components.items()],
        ]
        if self.stats:
            lines += ["", "| statistic | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in self.stats.items()]
        if self.failures:
            lines += ["", "Failed records:", ""]
            lines += [f"- `{k}`: {v.splitlines()[0]}" for k, v in list(self.failures.items())[:50]]
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> tuple[Path, Path]:
        """``dataset_card.md`` and ``dataset_card.json`` under ``folder`` (atomic)."""
        folder = Path(folder)
        return (
            atomic_write_text(folder / "dataset_card.md", self.to_markdown()),
            atomic_write_json(folder / "dataset_card.json", asdict(self)),
        )


class Builder(abc.ABC):
    """Base of the data set builders: ``build(run, resume=...) -> DatasetCard``, ``evaluate``."""

    name: ClassVar[str]
    config_cls: ClassVar[type]
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    status: ClassVar[str] = ""
    """What works and what is missing, in one line (the systems table of the README)."""
    demo_preset: ClassVar[str] = "quick"

    def __init__(self, config: Any) -> None:
        self.config = config

    def prepare(self) -> None:
        """Read and check the inputs named by the config before the build folder is created
        (a bad input then leaves nothing behind); ``build`` reuses what this found. The default
        checks nothing."""
        return None

    @abc.abstractmethod
    def build(self, run: RunDir, *, resume: bool = False) -> DatasetCard: ...

    @abc.abstractmethod
    def evaluate(self, run: RunDir) -> dict[str, float]:
        """Quality checks of a built data set (read back from ``run``)."""

    @abc.abstractmethod
    def demo(self, run: RunDir, card: DatasetCard) -> DemoResult:
        """The row and plots of the demo report after a ``quick`` build."""


BUILDERS: Registry[type[Builder]] = Registry("builder")
