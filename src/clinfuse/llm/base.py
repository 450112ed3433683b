"""Messages, generation settings, completions, the ``TextBackend`` protocol, the backend registry.

Every text/vision model in clinfuse sits behind one protocol::

    backend.model_id                       # "gpt-4o-mini@http://localhost:8000/v1", "echo", ...
    backend.generate(messages, config)     # -> Completion

and every request has a content address, :func:`prompt_hash`: the SHA-256 of a canonical JSON of
(messages, model id, generation settings), with images entered by the SHA-256 of their bytes. The
hash is what the disk cache keys on and what data set builders record next to each generated text.

Backends are made from a spec string by :func:`make_backend`::

    make_backend("local:echo")
    make_backend("openai:gpt-4o-mini@http://localhost:8000/v1", timeout=30)
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from clinfuse.core.errors import ClinfuseError, ConfigError, DataError
from clinfuse.core.registry import Registry

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

HASH_VERSION = 1
"""Bumped when the canonical request form changes (old cache entries then simply miss)."""


class LLMError(ClinfuseError):
    """A model backend failed: the server refused the request, answered garbage, or never answered.

    ``status`` is the HTTP status when there was one (``None`` for timeouts, connection errors and
    malformed answers).
    """

    def __init__(self, message: str, *, status: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields across process pools
        kw = {
            "status": self.status,
            "expected": self.expected,
            "found": self.found,
            "fix": self.fix,
        }
        return (_rebuild_llm_error, (self.message, kw))


def _rebuild_llm_error(message: str, kw: dict[str, Any]) -> LLMError:
    return LLMError(message, **kw)


# ---------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class TextPart:
    """A piece of text inside a multi-part message."""

    text: str
    """The text."""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ConfigError(
                "TextPart.text must be a string",
                expected="str",
                found=type(self.text).__name__,
                fix="convert it with str(...)",
            )


@dataclass(frozen=True)
class ImagePart:
    """An image inside a multi-part message (for vision models); sent as a base64 data URI."""

    data: bytes = field(repr=False)
    """The encoded image file (PNG, JPEG, ...), not decoded pixels."""
    mime: str = "image/png"
    """Its media type, ``image/png``, ``image/jpeg``, ``image/webp``, ..."""

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise ConfigError(
                "ImagePart.data must be the bytes of an encoded image file",
                expected="bytes (e.g. Path('ecg.png').read_bytes())",
                found=type(self.data).__name__,
                fix="use ImagePart.from_path(path) or pass the file's bytes",
            )
        object.__setattr__(self, "data", bytes(self.data))
        if not (isinstance(self.mime, str) and self.mime.startswith("image/")):
            raise ConfigError(
                "ImagePart.mime must be an image media type",
                expected="'image/png', 'image/jpeg', ...",
                found=repr(self.mime),
                fix="pass mime='image/png' (or the type of your file)",
            )

    @classmethod
    def from_path(cls, path: str | Path, mime: str | None = None) -> ImagePart:
        """Read an image file; the media type is guessed from the suffix unless given."""
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"image file not found: {path}",
                expected="an existing PNG/JPEG file",
                found=str(path),
                fix="check the path",
            )
        mime = mime or mimetypes.guess_type(path.name)[0] or ""
        return cls(path.read_bytes(), mime)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes: how the image enters :func:`prompt_hash`."""
        return hashlib.sha256(self.data).hexdigest()

    def data_uri(self) -> str:
        """``data:<mime>;base64,<...>``, the form OpenAI-compatible servers take."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:
        return f"ImagePart(<{len(self.data)} bytes>, mime={self.mime!r})"


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    """One chat turn. ``content`` is a string, or a sequence of parts for text + images.

    Plain strings inside a part list are taken as :class:`TextPart`; lists become tuples.

    Example:
        >>> Message("user", ["Describe this ECG.", ImagePart(b"png", "image/png")]).content[0]
        TextPart(text='Describe this ECG.')
    """

    role: Role
    """Who speaks: ``system`` (instructions), ``user`` or ``assistant``."""
    content: str | tuple[Part, ...]
    """The text, or text and image parts in order."""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(
                f"unknown message role {self.role!r}",
                expected=" | ".join(ROLES),
                found=repr(self.role),
                fix="use Message('user', ...) for input and 'system' for instructions",
            )
        if isinstance(self.content, str):
            return
        if not isinstance(self.content, Sequence):
            raise ConfigError(
                "Message.content must be a string or a sequence of parts",
                expected="str | [TextPart | ImagePart | str, ...]",
                found=type(self.content).__name__,
            )
        parts = tuple(TextPart(p) if isinstance(p, str) else p for p in self.content)
        bad = [type(p).__name__ for p in parts if not isinstance(p, TextPart | ImagePart)]
        if bad:
            raise ConfigError(
                "Message.content holds something that is not a part",
                expected="TextPart, ImagePart or str",
                found=", ".join(bad),
            )
        object.__setattr__(self, "content", parts)

    @property
    def parts(self) -> tuple[Part, ...]:
        """The content as parts (a string is one :class:`TextPart`)."""
        return (TextPart(self.content),) if isinstance(self.content, str) else self.content

    @property
    def text(self) -> str:
        """The text parts joined by newlines (images left out)."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))


# ---------------------------------------------------------------------------------------------
# generation settings and results


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings sent with a request (``None`` leaves the server's default)."""

    temperature: float = 0.0
    """Sampling temperature; 0 is greedy (the only setting cached without a seed)."""
    max_tokens: int | None = None
    """Upper bound on generated tokens."""
    seed: int | None = None
    """Sampling seed, for servers that honour one; makes ``temperature > 0`` requests cacheable."""
    top_p: float | None = None
    """Nucleus sampling mass in (0, 1]."""
    stop: tuple[str, ...] = ()
    """Strings that end generation (a single string is taken as one stop string)."""
    json_mode: bool = False
    """Ask for a JSON object (OpenAI ``response_format={"type": "json_object"}``)."""

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        object.__setattr__(self, "stop", stop)
        checks: list[tuple[bool, str, str]] = [
            (
                isinstance(self.temperature, int | float) and self.temperature >= 0,
                "temperature",
                "a number >= 0",
            ),
            (
                self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
                "max_tokens",
                "None or an int >= 1",
            ),
            (self.seed is None or _is_int(self.seed), "seed", "None or an int"),
            (
                self.top_p is None or (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1),
                "top_p",
                "None or a number in (0, 1]",
            ),
            (all(isinstance(s, str) and s for s in stop), "stop", "non-empty strings"),
            (isinstance(self.json_mode, bool), "json_mode", "True or False"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ConfigError(
                    f"bad GenerationConfig.{name}",
                    expected=expected,
                    found=repr(getattr(self, name)),
                    fix=f"pass GenerationConfig({name}=...) with {expected}",
                )
        # 0 and 0.0 are the same request: store floats so the canonical JSON agrees
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.top_p is not None:
            object.__setattr__(self, "top_p", float(self.top_p))

    @property
    def deterministic(self) -> bool:
        """Whether repeating the request should give the same answer (greedy, or seeded)."""
        return self.temperature == 0.0 or self.seed is not None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Completion:
    """A model's answer to one request, with what is needed to audit and reproduce it."""

    text: str
    """The generated text."""
    model_id: str
    """The backend's ``model_id`` (model and endpoint)."""
    backend: str
    """Backend kind: ``openai``, ``local:echo``, ``local:callable``, ..."""
    prompt_hash: str
    """:func:`prompt_hash` of the request."""
    usage: dict[str, int] = field(default_factory=dict)
    """Token counts as the server reported them (``prompt_tokens``, ``completion_tokens``, ...)."""
    raw: dict[str, Any] | None = None
    """The server's full JSON answer, when there was one."""
    created: str = field(default_factory=_now)
    """UTC time the answer was generated (ISO 8601); a cache hit keeps the original time."""
    cached: bool = False
    """True when the answer came from the disk cache rather than the model."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the cache's on-disk form)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Completion:
        """Inverse of :meth:`to_dict`; wrong types raise :class:`DataError`."""
        types: dict[str, type | tuple[type, ...]] = {
            "text": str,
            "model_id": str,
            "backend": str,
            "prompt_hash": str,
            "usage": dict,
            "raw": (dict, type(None)),
            "created": str,
            "cached": bool,
        }
        bad = [
            k for k, t in types.items() if not isinstance(d, dict) or not isinstance(d.get(k), t)
        ]
        if bad:
            raise DataError(
                "not a serialised Completion",
                expected=f"a dict with fields {', '.join(types)}",
                found=f"missing or mistyped: {', '.join(bad)}",
            )
        return cls(**{k: d[k] for k in types})


# ---------------------------------------------------------------------------------------------
# the request's content address


def canonical_request(
    messages: Sequence[Message], model_id: str, config: GenerationConfig | None = None
) -> dict[str, Any]:
    """The JSON-ready form of a request that :func:`prompt_hash` digests.

    Strings and single-text-part contents coincide; images appear as
    ``{"type": "image", "mime": ..., "sha256": ...}``, never by their bytes.
    """
    config = config or GenerationConfig()
    msgs = []
    for m in messages:
        if not isinstance(m, Message):
            raise ConfigError(
                "messages must be Message objects",
                expected="Message(role, content)",
                found=type(m).__name__,
                fix="wrap each turn: Message('user', 'text')",
            )
        parts = [
            {"type": "text", "text": p.text}
            if isinstance(p, TextPart)
            else {"type": "image", "mime": p.mime, "sha256": p.sha256}
            for p in m.parts
        ]
        msgs.append({"role": m.role, "content": parts})
    return {
        "v": HASH_VERSION,
        "model_id": model_id,
        "config": dataclasses.asdict(config),
        "messages": msgs,
    }


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free, ASCII-only JSON (one byte string per value, on any machine)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def prompt_hash(
    messages: Sequence[Message], model_id: str, config: GenerationConfig | None = None
) -> str:
    r"""Hex SHA-256 of :func:`canonical_json` of :func:`canonical_request`.

    Depends on every message role, text, image byte and media type, on ``model_id`` and on every
    :class:`GenerationConfig` field; not on Python's hash seed, the process or dict order.
    ``config=None`` equals ``GenerationConfig()``.

    Example:
        >>> prompt_hash([Message("user", "hi")], "echo")[:16]
        'f860d7d32a136482'
    """
    blob = canonical_json(canonical_request(messages, model_id, config)).encode("ascii")
    return hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------------------------------------
# the protocol and the registry


@runtime_checkable
class TextBackend(Protocol):
    """Anything that turns chat messages into a :class:`Completion`."""

    model_id: str

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion: ...


BackendFactory = Callable[..., TextBackend]
"""``factory(arg, **kw)``: ``arg`` is the part of the spec after ``<kind>:``."""

BACKENDS: Registry[BackendFactory] = Registry("LLM backend")
"""Backend kinds by spec prefix: ``local`` (:mod:`clinfuse.llm.local`), ``openai``
(:mod:`clinfuse.llm.openai_compat`)."""

SPEC_EXAMPLES = "'local:echo' or 'openai:gpt-4o-mini@http://localhost:8000/v1'"


def make_backend(spec: str, **kw: Any) -> TextBackend:
    """Build a backend from ``"<kind>:<arg>"``; keyword arguments go to its constructor.

    Example:
        >>> make_backend("local:echo").model_id
        'echo'
    """
    import clinfuse.llm  # noqa: F401  (the package registers the built-in kinds)

    kind, sep, arg = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (sep and kind and arg):
        raise ConfigError(
            f"bad LLM backend spec {spec!r}",
            expected=f"'<kind>:<name>', e.g. {SPEC_EXAMPLES}",
            found=repr(spec),
            fix=f"prefix the name with one of: {', '.join(BACKENDS.names())}",
        )
    return BACKENDS.get(kind)(arg, **kw)
