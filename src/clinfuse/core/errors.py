"""Errors a user can cause, each saying what was expected, what was found, and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ClinfuseError(Exception):
    """Base class of every error clinfuse raises on bad input.

    Example:
        >>> e = ClinfuseError("bad split", expected="train|valid", found="dev", fix="rename it")
        >>> str(e)
        'bad split\\n  expected: train|valid\\n  found:    dev\\n  fix:      rename it'
    """

    def __init__(
        self,
        message: str,
        *,
        expected: object | None = None,
        found: object | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.expected = expected
        self.found = found
        self.fix = fix
        lines = [message]
        if expected is not None:
            lines.append(f"  expected: {expected}")
        if found is not None:
            lines.append(f"  found:    {found}")
        if fix is not None:
            lines.append(f"  fix:      {fix}")
        super().__init__("\n".join(lines))


class ConfigError(ClinfuseError):
    """A config file, preset or ``--set`` override is wrong (unknown key, bad type or value)."""


class DataError(ClinfuseError):
    """A data file is missing, truncated, unsafe, or does not match the expected schema."""


class UnsafePathError(DataError):
    """A path named by a data file, a run folder or a name taken from data would leave its root
    (``..``, an absolute path, a symbolic link) or collide with another name."""


class UnknownNameError(ClinfuseError, KeyError):
    """A registry lookup failed; the message lists close matches and the known names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return Exception.__str__(self)


class RunDirError(ClinfuseError):
    """A path given as ``--run`` is not a clinfuse run directory, or is a run of another method."""


class MissingExtraError(ClinfuseError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency or fail with the extra that provides it.

    Example:
        >>> require("math", "dev").sqrt(4.0)
        2.0
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"optional dependency {module!r} is not installed",
            expected=f"the [{extra}] extra",
            found=f"ImportError: {exc}",
            fix=f"pip install 'clinfuse[{extra}]'",
        ) from exc


def _format_failures() -> tuple[type[BaseException], ...]:
    """Exceptions a parser raises on a malformed file (decoding, parsing, decompression,
    container formats, a field of the wrong type or shape)."""
    import pickle
    import struct
    import zipfile
    import zlib

    # LookupError: KeyError, IndexError and codecs' "unknown encoding" (an XML declaration)
    return (
        UnicodeError,
        ValueError,
        TypeError,
        LookupError,
        AttributeError,
        EOFError,
        OSError,
        RuntimeError,
        OverflowError,
        zlib.error,
        struct.error,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    )


def reads_untrusted(expected: str):
    """Decorate a reader ``fn(path, ...)`` of untrusted files: a :class:`ClinfuseError` passes
    through, and any exception a malformed file makes a parser raise becomes a
    :class:`DataError` naming the file, what was expected and what broke.

    Example:
        >>> @reads_untrusted("a UTF-8 text file")
        ... def read(path):
        ...     return b"\\xff".decode("utf-8")
        >>> read("x.txt")
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.DataError: cannot read x.txt
          expected: a UTF-8 text file
          found:    UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte
          fix:      check the file: it may be truncated, corrupted, empty, or of another format
    """  # noqa: E501
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def reader(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except ClinfuseError:
                raise
            except _format_failures() as exc:
                text = str(exc).strip().splitlines()
                raise DataError(
                    f"cannot read {getattr(path, 'path', None) or path}",
                    expected=expected,
                    found=f"{type(exc).__name__}: {text[0][:200] if text else ''}",
                    fix="check the file: it may be truncated, corrupted, empty, or of another "
                    "format",
                ) from exc

        return reader

    return wrap


def suggest(name: str, known: Iterable[str], otherwise: str = "", *, cutoff: float = 0.5) -> str:
    """``"did you mean: a, b?"`` naming up to three of ``known`` close to ``name`` (the ones
    equal up to case first), or ``otherwise`` when none is close. Every "unknown name" error
    builds its ``fix`` with it.

    Example:
        >>> suggest("gausian", ["gaussian", "drop", "missing"])
        'did you mean: gaussian?'
        >>> suggest("Outcome", ["outcome", "age"])
        'did you mean: outcome?'
        >>> suggest("zzz", ["a", "b"], "use one of: a, b")
        'use one of: a, b'
    """
    names = [str(k) for k in known]
    same_case = [k for k in names if k.lower() == str(name).lower() and k != name]
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=cutoff)
    hits = list(dict.fromkeys(same_case + close))[:3]
    return f"did you mean: {', '.join(hits)}?" if hits else otherwise
