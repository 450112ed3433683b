"""The path policy: where clinfuse may write, what it may read, and how names from data become
file names.

* Every output path is resolved (symbolic links followed) and must stay under its run root:
  :func:`output_path`.
* Every input path named inside a data file (a manifest, a record list, a label CSV, a resume
  log) is taken relative to its declared input root and must stay under it, unless the caller
  passes ``allow_outside=True`` (a config flag the user sets on purpose): :func:`input_path`.
* Names taken from data are slugged; two different names that give the same slug are an error
  naming both sources, never a silent merge: :class:`Slugs`.
* A file is deleted only when it is under the run root and its SHA-256 equals the hash the run
  recorded when it wrote the file: :func:`remove_created`.

Example:
    >>> slug("77 1/../x")
    '77_1_.._x'
    >>> output_path("/tmp/run", "images", "a.png").as_posix()
    '/tmp/run/images/a.png'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from clinfuse.core.errors import UnsafePathError

__all__ = [
    "Slugs",
    "file_sha256",
    "input_path",
    "is_within",
    "output_path",
    "remove_created",
    "slug",
]


def slug(text: object, *, max_len: int = 120) -> str:
    """``text`` as one file-name component: every character that is not a letter, a digit,
    ``.``, ``_`` or ``-`` becomes ``_``; a name made only of dots (``.``, ``..``) or nothing
    becomes ``_``.

    Example:
        >>> slug("Lung Opacity"), slug(".."), slug(""), slug("a/b")
        ('Lung_Opacity', '_', '_', 'a_b')
    """
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))[:max_len]
    return "_" if not out.strip(".") else out


def _resolve(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (resolved, links followed) is ``root`` or lies under it.

    Example:
        >>> is_within("/tmp/run/../etc", "/tmp/run")
        False
    """
    p, r = _resolve(path), _resolve(root)
    return p == r or r in p.parents


def output_path(root: str | os.PathLike[str], *parts: str | os.PathLike[str]) -> Path:
    """``root / parts...``, refused with :class:`UnsafePathError` when it resolves outside
    ``root`` (``..``, an absolute part, a symbolic link inside the run folder)."""
    path = Path(root).joinpath(*parts)
    if not is_within(path, root):
        raise UnsafePathError(
            "an output path leaves the output folder",
            expected=f"a path under {root}",
            found=f"{'/'.join(map(str, parts))} -> {_resolve(path)}",
            fix="rename the item (names from data must not hold '..' or '/') or remove the "
            "symbolic link from the output folder",
        )
    return path


def input_path(
    root: str | os.PathLike[str],
    name: str | os.PathLike[str],
    *,
    source: str,
    allow_outside: bool = False,
    flag: str = "allow_outside_paths",
) -> Path:
    """The file ``name`` (relative to ``root``, or absolute) that the data file ``source`` names.

    Refused with :class:`UnsafePathError` when it resolves outside ``root`` and
    ``allow_outside`` is False; ``flag`` is the config switch the message tells the user to set.
    """
    name = os.fspath(name)
    if "\x00" in name:
        raise UnsafePathError(
            f"{source} names a path with a NUL byte", expected="a file path", found=repr(name)
        )
    path = Path(name) if Path(name).is_absolute() else Path(root) / name
    if not allow_outside and not is_within(path, root):
        raise UnsafePathError(
            f"{source} names a file outside its folder",
            expected=f"a path under {_resolve(root)}",
            found=f"{name!r} -> {_resolve(path)}",
            fix=f"move the files under that folder, or --set {flag}=true if this data file "
            "is trusted",
        )
    return path


class Slugs:
    """Collision-free file names for names taken from data.

    Example:
        >>> s = Slugs("study id")
        >>> s.add("77 1", "row 2")
        '77_1'
        >>> s.add("77_1", "row 5")
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.UnsafePathError: two study ids give the same file name '77_1'
          expected: study ids that differ after cleaning (letters, digits, . _ - kept)
          found:    '77 1' (row 2) and '77_1' (row 5)
          fix:      rename one of them
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._seen: dict[str, tuple[str, str]] = {}

    def add(self, name: object, source: str, key: str | None = None) -> str:
        """The slug of ``name`` (``key``: the slug to check, when the caller builds its own)."""
        s = slug(name) if key is None else key
        prev = self._seen.get(s)
        if prev is not None and prev[0] != str(name):
            raise UnsafePathError(
                f"two {self.what}s give the same file name {s!r}",
                expected=f"{self.what}s that differ after cleaning (letters, digits, . _ - kept)",
                found=f"{prev[0]!r} ({prev[1]}) and {str(name)!r} ({source})",
                fix="rename one of them",
            )
        self._seen.setdefault(s, (str(name), source))
        return s


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_created(root: str | os.PathLike[str], rel: str | None, sha256: str | None) -> bool:
    """Delete ``root/rel`` only if it lies under ``root``, is a regular file (not a link) and
    its SHA-256 is ``sha256`` (the hash recorded when the run wrote it); return whether it went.

    Anything else (no hash, a path that leaves ``root``, another file's content) is left alone.
    """
    if not rel or not sha256 or not isinstance(rel, str) or not isinstance(sha256, str):
        return False
    path = Path(root) / rel
    if Path(rel).is_absolute() or not is_within(path, root) or path.is_symlink():
        return False
    if not path.is_file() or file_sha256(path) != sha256:
        return False
    path.unlink()
    return True
