"""One folder per learner. Importing :func:`load_all` registers every method in ``METHODS``."""

from __future__ import annotations

import importlib

from clinfuse.core.learner import METHODS

#: modules whose import registers a method (heavy optional imports stay inside them)
METHOD_MODULES = (
    "clinfuse.methods.dib.method",
    "clinfuse.methods.tunsr.method",
    "clinfuse.methods.deepen.method",
    "clinfuse.methods.dpsurv.method",
    "clinfuse.methods.ehrprompt.method",
    "clinfuse.methods.procon.method",
    "clinfuse.methods.deepmedix.method",
)


def load_all() -> None:
    for mod in METHOD_MODULES:
        importlib.import_module(mod)


__all__ = ["METHODS", "METHOD_MODULES", "load_all"]
