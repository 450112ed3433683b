"""clinfuse: recent multimodal, mostly clinical, AI papers as one tested toolkit.

``clinfuse.run(name, ...)`` fits a method and returns ``(learner, run_dir)``;
``clinfuse.load(run_dir)`` reloads a trained learner; ``clinfuse.build(name, ...)`` builds a data
set and returns ``(builder, card, run_dir)``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build", "load", "run"]


def __getattr__(name: str) -> Any:  # lazy: `import clinfuse` stays cheap
    if name in ("run", "load", "build"):
        from clinfuse import api

        return getattr(api, name)
    raise AttributeError(f"module 'clinfuse' has no attribute {name!r}")
