"""Data files inside installed packages, found without importing the packages.

Several wheels ship data we read (SmolLM2 GGUF, pydicom-data radiographs, torchxrayvision's
OPEN-I reports, ecgprocess ECG files, ...); importing them would pull heavy or conflicting
dependencies, so they are located with :func:`importlib.util.find_spec` only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(name: str) -> Path | None:
    """Folder of an installed package (its first search location), or None when not installed.

    Example:
        >>> package_dir("clinfuse").name
        'clinfuse'
        >>> package_dir("no_such_package_xyz") is None
        True
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(name: str, *parts: str) -> Path | None:
    """``<package folder>/<parts...>`` when the package is installed and the file exists, else None
    (every search location of a namespace package is tried).

    Example:
        >>> package_file("clinfuse", "py.typed").name
        'py.typed'
        >>> package_file("clinfuse", "missing.txt") is None
        True
    """
    spec = importlib.util.find_spec(name)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder).joinpath(*parts)
        if candidate.is_file():
            return candidate
    return None
