"""A disk cache of completions keyed by :func:`~clinfuse.llm.base.prompt_hash`.

Layout: one JSON file per request, in 256 shards by the hash's first two hex digits::

    <directory>/3f/3fa9...e1.json
    {"format": "clinfuse.llm.cache/1", "prompt_hash": "3fa9...e1",
     "request": {<canonical request: messages, model_id, config; images by SHA-256>},
     "completion": {<Completion fields>}}

Each file is written to a temporary name in its shard and renamed into place, and a rename is
atomic, so any number of threads or processes may share one directory: a reader sees a whole
entry or none, and two writers of one key leave one whole entry (the later one).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.llm.base import (
    Completion,
    GenerationConfig,
    Message,
    TextBackend,
    canonical_request,
    prompt_hash,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = "clinfuse.llm.cache/1"

T = TypeVar("T")


class DiskCache(abc.ABC):
    """What both disk caches share: the wrapped backend, a directory of 256 shards of one JSON
    entry per prompt hash, thread-safe hit/miss counters, and the read-through step
    (:meth:`_through`): a readable entry answers, else the backend does and its answer is
    stored; a failed write is logged and counted, never raised."""

    def __init__(self, backend: Any, directory: str | Path) -> None:
        self.backend = backend
        self.directory = Path(directory)
        self.model_id = backend.model_id
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "misses": 0, "bypassed": 0, "write_errors": 0}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r}, directory={str(self.directory)!r})"

    @property
    def stats(self) -> dict[str, int]:
        """Counts for this object: ``hits``, ``misses``, ``bypassed``, ``write_errors``."""
        with self._lock:
            return dict(self._stats)

    def _count(self, key: str) -> None:
        with self._lock:
            self._stats[key] += 1

    def path_for(self, digest: str) -> Path:
        """The (JSON) entry file of a prompt hash."""
        return self.directory / digest[:2] / f"{digest}.json"

    def _entry(self, digest: str) -> dict[str, Any]:
        """The entry of ``digest`` as a dict (FileNotFoundError when absent; DataError or
        ValueError when it is not an entry for this hash)."""
        path = self.path_for(digest)
        entry = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(entry, dict) and entry.get("prompt_hash") == digest):
            raise DataError("entry is not for this prompt hash", found=path.name)
        return entry

    @abc.abstractmethod
    def lookup(self, digest: str) -> Any:
        """The cached answer of a prompt hash, or None (missing or unreadable entry)."""

    def _through(self, digest: str, compute: Callable[[], T], store: Callable[[T], None]) -> T:
        hit = self.lookup(digest)
        if hit is not None:
            self._count("hits")
            return hit
        self._count("misses")
        result = compute()
        try:
            store(result)
        except OSError as exc:
            self._count("write_errors")
            log.warning("could not write cache entry %s: %s", self.path_for(digest), exc)
        return result


class CachedBackend(DiskCache):
    """Wraps a backend; answers a repeated request from disk with ``Completion(cached=True)``.

    Which requests are cached: those whose answer is meant to repeat, i.e. greedy ones
    (``temperature == 0``) and seeded ones (``seed`` set). A ``temperature > 0`` request without
    a seed is a fresh draw each time; caching it would turn every later draw into the first one,
    so it goes straight to the backend (counted in ``stats["bypassed"]``). Give a seed to cache
    sampled answers (one entry per seed).

    The cache trusts ``model_id``: a backend whose behaviour changes must change its model id.
    A corrupt entry is logged and recomputed; a failed write is logged and the answer returned.

    Pickles (without its counters) for process pools, so that workers share the directory.

    Example:
        >>> import tempfile
        >>> from clinfuse.llm.local import EchoBackend
        >>> with tempfile.TemporaryDirectory() as d:
        ...     b = CachedBackend(EchoBackend(), d)
        ...     [b.generate([Message("user", "hi")]).cached for _ in range(2)]
        [False, True]
    """

    def __init__(self, backend: TextBackend, directory: str | Path) -> None:
        if not isinstance(backend, TextBackend):
            raise ConfigError(
                "CachedBackend wraps a text backend",
                expected="an object with model_id and generate(messages, config)",
                found=type(backend).__name__,
                fix="e.g. CachedBackend(make_backend('local:echo'), 'cache/')",
            )
        super().__init__(backend, directory)

    def __getstate__(self) -> dict[str, Any]:
        return {"backend": self.backend, "directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["backend"], state["directory"])  # type: ignore[misc]

    def lookup(self, digest: str) -> Completion | None:
        """The cached completion of a prompt hash, or None (missing or unreadable entry)."""
        try:
            completion = Completion.from_dict(self._entry(digest).get("completion"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, DataError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", self.path_for(digest), exc)
            return None
        return dataclasses.replace(completion, cached=True)

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion:
        config = config or GenerationConfig()
        if not config.deterministic:
            self._count("bypassed")
            return self.backend.generate(messages, config)
        digest = prompt_hash(messages, self.model_id, config)

        def store(completion: Completion) -> None:
            # imported here: clinfuse.core.runs imports torch, which the llm package does not need
            from clinfuse.core.runs import atomic_write_json

            entry: dict[str, Any] = {
                "format": CACHE_FORMAT,
                "prompt_hash": digest,
                "request": canonical_request(messages, self.model_id, config),
                "completion": dataclasses.replace(completion, cached=False).to_dict(),
            }
            atomic_write_json(self.path_for(digest), entry)

        return self._through(digest, lambda: self.backend.generate(messages, config), store)
