"""Data set builders: one folder per builder, each with build() instead of fit().
Importing :func:`load_all` registers every builder in ``BUILDERS``."""

from __future__ import annotations

import importlib

from clinfuse.core.builder import BUILDERS

#: modules whose import registers a builder (heavy optional imports stay inside them)
BUILDER_MODULES = ("clinfuse.builders.meeti.build", "clinfuse.builders.medbanana.build")


def load_all() -> None:
    for mod in BUILDER_MODULES:
        importlib.import_module(mod)


__all__ = ["BUILDERS", "BUILDER_MODULES", "load_all"]
