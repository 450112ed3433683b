"""A restricted unpickler for untrusted data files: numpy arrays and builtins only.

Plain :func:`pickle.load` runs whatever callable a file names, so a downloaded MMSA pickle
could run ``os.system`` on load. :func:`safe_load` resolves every global the pickle names
against a fixed allow-list (numpy array reconstruction, dtypes and scalars; builtin containers
and scalars; ``collections.OrderedDict``) and refuses anything else *before* it is called.

Pickles written by numpy 1.x (``numpy.core.*``) and numpy 2.x (``numpy._core.*``) both load,
whichever numpy is installed, and protocols 0 to 5 are supported.

Example:
    >>> import io, pickle
    >>> import numpy as np
    >>> safe_load(io.BytesIO(pickle.dumps({"x": np.arange(3)})))["x"]
    array([0, 1, 2])
    >>> try:
    ...     safe_load(io.BytesIO(pickle.dumps(print)))
    ... except DataError as err:
    ...     print(err.message)
    refused to unpickle builtins.print: only numpy arrays and builtins are allowed
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import importlib
import io
import os
import pickle
import struct
from pathlib import Path
from typing import IO, Any

from clinfuse.core.errors import DataError

__all__ = ["safe_load", "safe_loads", "ALLOWED_BUILTINS"]

ALLOWED_BUILTINS: frozenset[str] = frozenset(
    {
        "dict",
        "list",
        "tuple",
        "set",
        "frozenset",
        "str",
        "bytes",
        "int",
        "float",
        "complex",
        "bool",
        "slice",
        "range",
    }
)
"""Names in ``builtins`` a pickle may reference (plain constructors without side effects)."""

# numpy moved ``numpy.core`` to ``numpy._core`` in 2.0; pickles name whichever wrote them.
_NUMPY_CORE_GLOBALS: dict[str, frozenset[str]] = {
    "multiarray": frozenset({"_reconstruct", "scalar"}),
    "_multiarray_umath": frozenset({"_reconstruct", "scalar"}),
    "numeric": frozenset({"_frombuffer"}),
}


def _latin1_encode(obj: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 0-2 pickles use it for ``bytes``: latin-1 only."""
    if not isinstance(obj, str) or encoding not in {"latin1", "latin-1"}:
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(obj, encoding, errors)


def _numpy_core_attr(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>``, falling back to ``numpy.core`` on numpy 1.x."""
    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # pragma: no cover - numpy < 2
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _resolve(module: str, name: str) -> Any | None:
    """The object for an allowed ``module.name``, or ``None`` when it is not allowed."""
    if module == "builtins":
        if name in ALLOWED_BUILTINS:
            import builtins

            return getattr(builtins, name)
        return None
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module == "numpy" and name in {"ndarray", "dtype"}:
        import numpy as np

        return getattr(np, name)
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            submodule = module[len(prefix) :]
            if name in _NUMPY_CORE_GLOBALS.get(submodule, frozenset()):
                return _numpy_core_attr(submodule, name)
            return None
    if module == "numpy.dtypes":
        import numpy as np

        dtypes = getattr(np, "dtypes", None)
        obj = getattr(dtypes, name, None) if dtypes is not None else None
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            return obj
        return None
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` only hands out allow-listed globals."""

    def find_class(self, module: str, name: str) -> Any:
        # The Python 2 name mapping the stdlib applies for protocols 0-2 (``__builtin__.xrange``
        # -> ``builtins.range``); applied unconditionally, since the allow-list checks the result.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        obj = _resolve(module, name)
        if obj is None:
            raise DataError(
                f"refused to unpickle {module}.{name}: only numpy arrays and builtins are allowed",
                expected="numpy arrays/dtypes/scalars and builtin containers or scalars",
                found=f"a reference to {module}.{name}",
                fix="only load data files from a source you trust; if this file should hold plain "
                "arrays, re-create it with numpy arrays, dicts and lists only",
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


_CORRUPT_ERRORS: tuple[type[BaseException], ...] = (
    EOFError,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ImportError,
    OverflowError,
    UnicodeError,
    struct.error,
    RecursionError,
)


def _load(fh: IO[bytes], label: str) -> object:
    try:
        return _RestrictedUnpickler(fh).load()
    except DataError:
        raise
    except MemoryError as exc:
        raise DataError(
            f"could not unpickle {label}: out of memory",
            expected="a pickle that fits in memory",
            found="MemoryError",
            fix="free memory or use a machine with more RAM; a corrupt file can also cause this, "
            "so check its SHA-256 against the published checksum",
        ) from exc
    except _CORRUPT_ERRORS as exc:
        raise DataError(
            f"could not unpickle {label}: the file is truncated or corrupt",
            expected="a complete pickle of numpy arrays and builtins",
            found=f"{type(exc).__name__}: {exc}",
            fix="re-download the file and check its SHA-256 against the published checksum "
            "(`sha256sum FILE`)",
        ) from exc


def safe_load(path_or_file: str | os.PathLike[str] | IO[bytes]) -> object:
    """Unpickle a file that may come from an untrusted source, allowing only arrays and builtins.

    Args:
        path_or_file: a path, or a binary file object opened for reading.

    Returns:
        The unpickled object (dicts, lists, tuples, numpy arrays, numpy scalars, str, numbers, ...).

    Raises:
        DataError: the file is missing, names a global outside the allow-list (nothing is executed),
            or is truncated/corrupt.

    Example:
        >>> import io, pickle
        >>> safe_load(io.BytesIO(pickle.dumps([1, (2.5, "a"), {3}])))
        [1, (2.5, 'a'), {3}]
    """
    if isinstance(path_or_file, str | os.PathLike):
        path = Path(path_or_file)
        if not path.is_file():
            raise DataError(
                f"data file not found: {path}",
                expected="an existing pickle file",
                found="nothing at that path" if not path.exists() else "a directory",
                fix="check the path (and the data directory setting)",
            )
        with path.open("rb") as fh:
            return _load(fh, str(path))
    label = str(getattr(path_or_file, "name", "<stream>"))
    return _load(path_or_file, label)


def safe_loads(data: bytes) -> object:
    """:func:`safe_load` for an in-memory pickle."""
    return _load(io.BytesIO(data), "<bytes>")
