"""Instruction-based image editing behind one protocol, with a content-addressed disk cache.

Every image editor in clinfuse sits behind::

    editor.model_id                                   # "gemini-2.5-flash-image@https://...", ...
    editor.edit(image, instruction, seed=None)        # -> EditedImage

:func:`edit_prompt_hash` is the request's content address: :func:`~clinfuse.llm.base.prompt_hash`
of one user message ``[instruction, image]`` (the image by the SHA-256 of its bytes), the model id
and ``GenerationConfig(seed=seed)``. Editors are made from a spec string::

    make_image_backend("gemini:gemini-2.5-flash-image")              # $GEMINI_API_KEY
    make_image_backend("openai:gpt-image-1@http://127.0.0.1:8000/v1")

Kinds: ``gemini`` (:class:`~clinfuse.llm.gemini.GeminiImageBackend`) and ``openai``
(:class:`OpenAIImageBackend`, ``POST {base_url}/images/edits``). A reply that is not JSON, or
that carries no image, raises :class:`~clinfuse.llm.base.LLMError` (never retried); transport
failures are retried as in :mod:`clinfuse.llm.openai_compat`.

``EditedImage.raw`` keeps the server's JSON with every base64 image payload replaced by
``"<N bytes>"`` (:func:`strip_payloads`), so logs and sidecars stay small.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import mimetypes
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.core.registry import Registry
from clinfuse.llm.base import (
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    TextPart,
    _now,
    prompt_hash,
)
from clinfuse.llm.cache import DiskCache
from clinfuse.llm.openai_compat import HTTPTransport, KeyedHTTPBackend, redact, resolve_base_url
from clinfuse.llm.ratelimit import RateLimiter

log = logging.getLogger(__name__)

IMAGE_CACHE_FORMAT = "clinfuse.llm.image_cache/1"
PAYLOAD_KEYS = frozenset({"b64_json", "inlineData", "inline_data"})
"""Keys whose base64 image payload :func:`strip_payloads` replaces by its size."""


@dataclass(frozen=True)
class EditedImage:
    """An editor's answer to one (image, instruction) request, with what is needed to audit it."""

    image: ImagePart
    """The returned image (encoded bytes + media type)."""
    text: str
    """Any text the model returned alongside (``""`` if none)."""
    model_id: str
    """The editor's ``model_id`` (model and endpoint)."""
    backend: str
    """Editor kind: ``gemini``, ``openai``, ``local:...``."""
    prompt_hash: str
    """:func:`edit_prompt_hash` of the request (instruction, source image SHA-256, seed)."""
    raw: dict[str, Any] | None = None
    """The server's JSON with base64 image payloads replaced by ``"<N bytes>"``."""
    created: str = field(default_factory=_now)
    """UTC time the image was generated (ISO 8601); a cache hit keeps the original time."""
    cached: bool = False
    """True when the image came from the disk cache rather than the model."""

    def meta(self) -> dict[str, Any]:
        """The JSON-ready fields other than the image bytes (the image by mime, size, SHA-256)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "image"}
        d["image"] = {"mime": self.image.mime, "bytes": len(self.image.data)}
        d["image"]["sha256"] = self.image.sha256
        return d


@runtime_checkable
class ImageEditBackend(Protocol):
    """Anything that edits an image following a text instruction."""

    model_id: str

    def edit(
        self, image: ImagePart, instruction: str, *, seed: int | None = None
    ) -> EditedImage: ...


ImageBackendFactory = Callable[..., ImageEditBackend]
"""``factory(arg, **kw)``: ``arg`` is the part of the spec after ``<kind>:``."""

IMAGE_BACKENDS: Registry[ImageBackendFactory] = Registry("image edit backend")
"""Editor kinds by spec prefix: ``gemini`` (:mod:`clinfuse.llm.gemini`), ``openai`` (here)."""


def make_image_backend(spec: str, **kw: Any) -> ImageEditBackend:
    """Build an editor from ``"<kind>:<arg>"``; keyword arguments go to its constructor.

    Example:
        >>> make_image_backend("openai:gpt-image-1@http://127.0.0.1:8000/v1").model_id
        'gpt-image-1@http://127.0.0.1:8000/v1'
    """
    import clinfuse.llm  # noqa: F401  (the package registers the built-in kinds)

    kind, sep, arg = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not (sep and kind and arg):
        raise ConfigError(
            f"bad image edit backend spec {spec!r}",
            expected="'<kind>:<model>', e.g. 'gemini:gemini-2.5-flash-image' or "
            "'openai:gpt-image-1@http://127.0.0.1:8000/v1'",
            found=repr(spec),
            fix=f"prefix the model with one of: {', '.join(IMAGE_BACKENDS.names())}",
        )
    return IMAGE_BACKENDS.get(kind)(arg, **kw)


def check_edit_request(image: object, instruction: object, seed: object) -> None:
    """:class:`ConfigError` unless ``image`` is an ImagePart, ``instruction`` text, ``seed`` int."""
    checks = [
        (isinstance(image, ImagePart), "image", "an ImagePart (ImagePart.from_path(...))", image),
        (
            isinstance(instruction, str) and bool(instruction.strip()),
            "instruction",
            "a non-empty string",
            instruction,
        ),
        (
            seed is None or (isinstance(seed, int) and not isinstance(seed, bool)),
            "seed",
            "None or an int",
            seed,
        ),
    ]
    for ok, name, expected, value in checks:
        if not ok:
            raise ConfigError(
                f"bad edit {name}",
                expected=expected,
                found=type(value).__name__ if name == "image" else repr(value)[:80],
            )


def edit_prompt_hash(
    image: ImagePart, instruction: str, model_id: str, seed: int | None = None
) -> str:
    """The content address of an edit request (see the module docstring).

    Example:
        >>> a = edit_prompt_hash(ImagePart(b"png"), "add a nodule", "m")
        >>> a == edit_prompt_hash(ImagePart(b"png"), "add a nodule", "m", seed=1)
        False
    """
    message = Message("user", (TextPart(instruction), image))
    return prompt_hash([message], model_id, GenerationConfig(seed=seed))


def _payload_size(value: Any) -> str | None:
    data = value.get("data") if isinstance(value, dict) else value
    if not isinstance(data, str):
        return None
    try:
        return f"<{len(base64.b64decode(data, validate=False))} bytes>"
    except (binascii.Error, ValueError):
        return f"<{len(data)} base64 chars>"


def strip_payloads(obj: Any) -> Any:
    """A copy of a JSON value with base64 image payloads replaced by ``"<N bytes>"``.

    Replaced: ``b64_json`` strings and the ``data`` of ``inlineData`` / ``inline_data`` parts.

    Example:
        >>> strip_payloads({"data": [{"b64_json": "AAEC"}], "n": 1})
        {'data': [{'b64_json': '<3 bytes>'}], 'n': 1}
        >>> strip_payloads({"inlineData": {"mimeType": "image/png", "data": "AAEC"}})
        {'inlineData': {'mimeType': 'image/png', 'data': '<3 bytes>'}}
    """
    if isinstance(obj, list):
        return [strip_payloads(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out: dict[str, Any] = {}
    for key, value in obj.items():
        size = _payload_size(value) if key in PAYLOAD_KEYS else None
        if size is None:
            out[key] = strip_payloads(value)
        elif isinstance(value, dict):
            out[key] = {**strip_payloads(value), "data": size}
        else:
            out[key] = size
    return out


def decode_image(b64: object, mime: str, label: str) -> ImagePart:
    """An :class:`ImagePart` from a base64 payload; :class:`LLMError` if it does not decode."""
    try:
        data = base64.b64decode(b64 if isinstance(b64, str) else "", validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        raise LLMError(
            f"{label} reply carries an image that is not valid base64",
            expected="a non-empty base64 string",
            found=repr(b64)[:80],
            fix="check the server; an OpenAI-compatible server must return b64_json",
        )
    ok = isinstance(mime, str) and mime.startswith("image/")
    return ImagePart(data, mime if ok else "image/png")


def no_image_error(label: str, found: str, fix: str) -> LLMError:
    """The :class:`LLMError` for a reply without an image (a failed attempt to a builder)."""
    return LLMError(
        f"{label}: reply carries no image",
        expected="an image in the reply",
        found=found,
        fix=fix,
    )


def api_key(env: str | None, label: str, *, required: bool) -> str | None:
    """The key in ``$env``; a :class:`ConfigError` naming the variable when required and unset."""
    key = os.environ.get(env) if env else None
    if required and not key:
        raise ConfigError(
            f"no API key for {label}",
            expected=f"the key in the environment variable ${env}",
            found=f"${env} is not set" if env else "api_key_env=None",
            fix=f"export {env}=... (keys are read only from the environment)"
            if env
            else "pass api_key_env='<VARIABLE>' naming the variable that holds the key",
        )
    return key or None


# ---------------------------------------------------------------------------------------------
# OpenAI images/edits


def multipart_body(
    fields: Mapping[str, str], files: Mapping[str, tuple[str, str, bytes]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body and its ``Content-Type`` header value.

    ``files`` maps a field name to ``(filename, media type, bytes)``.

    Example:
        >>> body, ctype = multipart_body({"prompt": "x"}, {})
        >>> ctype.startswith("multipart/form-data; boundary=")
        True
    """
    boundary = f"clinfuse-{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode("utf-8")
            + b"\r\n"
        )
    for name, (filename, mime, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {mime}\r\n\r\n'
        )
        chunks.append(head.encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


class OpenAIImageBackend(KeyedHTTPBackend):
    """Image edits from an OpenAI-compatible ``POST {base_url}/images/edits`` endpoint.

    Sends ``multipart/form-data`` with the fields ``model``, ``prompt``, ``n=1``,
    ``response_format=b64_json`` (unless ``response_format=None``: ``gpt-image-1`` always answers
    base64 and some servers refuse the field), ``extra_fields`` (``size``, ``quality``, ...),
    ``seed`` when ``send_seed`` (OpenAI has none; some local servers do), and the file ``image``.
    Reads ``data[0].b64_json``; a URL-only answer counts as "no image" (nothing is downloaded).

    Args:
        model: the server's model name (``gpt-image-1``, ``dall-e-2``, ...).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable holding the key (``OPENAI_API_KEY``); when unset no
            ``Authorization`` header is sent (local servers need none).
        timeout, max_retries, backoff, max_wait, sleep: as :class:`OpenAICompatBackend`.
        rate_limit_per_min: requests a minute, or None; ``rate_limiter`` shares a limiter instead.
        out_mime: media type of the returned image (the API does not name it).

    ``model_id`` is ``f"{model}@{base_url}"``; the key is never logged, stored in results, or
    pickled (a pickled backend reads the environment again).
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rate_limit_per_min: float | None = None,
        rate_limiter: RateLimiter | None = None,
        response_format: str | None = "b64_json",
        send_seed: bool = False,
        extra_fields: Mapping[str, str] | None = None,
        out_mime: str = "image/png",
    ) -> None:
        self._check_endpoint(
            model,
            base_url,
            "an OpenAI-compatible image server",
            "http://127.0.0.1:8000/v1",
            "write the spec as 'openai:<model>@<url>'",
        )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/images/edits"
        self.model_id = f"{model}@{self.base_url}"
        self.api_key_env = api_key_env
        self._api_key = api_key(api_key_env, self.model_id, required=False)
        if rate_limiter is None and rate_limit_per_min is not None:
            rate_limiter = RateLimiter(rate_limit_per_min)
        self._transport = HTTPTransport(
            self.model_id,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_wait=max_wait,
            sleep=sleep,
            rate_limiter=rate_limiter,
        )
        self.response_format = response_format
        self.send_seed = send_seed
        self.extra_fields = dict(extra_fields or {})
        self.out_mime = out_mime

    def form(self, image: ImagePart, instruction: str, seed: int | None = None) -> dict[str, str]:
        """The text fields of the multipart request."""
        fields = {"model": self.model, "prompt": instruction, "n": "1"}
        if self.response_format is not None:
            fields["response_format"] = self.response_format
        if self.send_seed and seed is not None:
            fields["seed"] = str(seed)
        return fields | self.extra_fields

    def edit(self, image: ImagePart, instruction: str, *, seed: int | None = None) -> EditedImage:
        """POST the edit, retrying transient failures; the first returned image."""
        check_edit_request(image, instruction, seed)
        digest = edit_prompt_hash(image, instruction, self.model_id, seed)
        ext = mimetypes.guess_extension(image.mime) or ".png"
        body, ctype = multipart_body(
            self.form(image, instruction, seed), {"image": (f"image{ext}", image.mime, image.data)}
        )
        headers = {"Content-Type": ctype, "Accept": "application/json", "User-Agent": "clinfuse"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        log.debug("POST %s model=%s prompt_hash=%s", self.url, self.model, digest[:12])
        raw = self._transport.post(self.url, body, headers, secret=self._api_key)
        data = self._transport.decode_json(
            raw,
            expected='a JSON object {"data": [{"b64_json": ...}]}',
            fix="check that base_url points at an OpenAI-compatible API with /images/edits",
            secret=self._api_key,
        )
        items = data.get("data")
        first = items[0] if isinstance(items, list) and items else None
        b64 = first.get("b64_json") if isinstance(first, dict) else None
        if b64 is None:
            shown = redact(json.dumps(strip_payloads(data))[:300], self._api_key)
            raise no_image_error(
                self.model_id,
                shown,
                "the server must answer data[0].b64_json (set response_format='b64_json'; "
                "URL answers are not fetched); an 'error' body is the server's refusal",
            )
        text = first.get("revised_prompt") if isinstance(first.get("revised_prompt"), str) else ""
        return EditedImage(
            image=decode_image(b64, self.out_mime, self.model_id),
            text=text,
            model_id=self.model_id,
            backend=self.backend,
            prompt_hash=digest,
            raw=strip_payloads(data),
        )


@IMAGE_BACKENDS.register("openai")
def _openai_images(arg: str, **kw: Any) -> OpenAIImageBackend:
    """``openai:<model>[@<base_url>]``; without ``@url``: ``base_url=`` or ``$OPENAI_BASE_URL``."""
    model, base_url = resolve_base_url("openai", arg, kw)
    return OpenAIImageBackend(model, base_url, **kw)


# ---------------------------------------------------------------------------------------------
# the disk cache


class CachedImageBackend(DiskCache):
    """Wraps an editor; answers a repeated request from disk with ``EditedImage(cached=True)``.

    Layout, in 256 shards by the hash's first two hex digits (:func:`edit_prompt_hash`, which
    covers instruction, source image bytes, model id and seed)::

        <directory>/3f/3fa9...e1.json              {"format", "prompt_hash", "request": {...},
                                                    "image": {"file", "mime", "bytes", "sha256"},
                                                    "edited": {EditedImage fields but the image}}
        <directory>/3f/3fa9...e1.<sha[:16]>.png    the returned image, as the server sent it

    Both files are written atomically, the image first: the sidecar is the commit mark, and an
    entry whose image is missing or does not match the sidecar's SHA-256 is a miss. The image
    file is named after its own bytes, so two writers of one key never overwrite each other's
    image: the later sidecar wins, and a non-deterministic editor may leave the other image as
    an orphan beside it.

    Which requests are cached: seeded ones. An unseeded edit is a fresh draw, so it goes to the
    editor each time (``stats["bypassed"]``) unless ``cache_unseeded=True``.

    Example:
        >>> import tempfile
        >>> from clinfuse.llm.images import EditedImage
        >>> class Copy:
        ...     model_id = "copy"
        ...     def edit(self, image, instruction, *, seed=None):
        ...         h = edit_prompt_hash(image, instruction, "copy", seed)
        ...         return EditedImage(image, "", "copy", "local:copy", h)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     c = CachedImageBackend(Copy(), d)
        ...     [c.edit(ImagePart(b"png"), "add", seed=0).cached for _ in range(2)]
        [False, True]
    """

    def __init__(
        self, backend: ImageEditBackend, directory: str | Path, *, cache_unseeded: bool = False
    ) -> None:
        if not isinstance(backend, ImageEditBackend):
            raise ConfigError(
                "CachedImageBackend wraps an image edit backend",
                expected="an object with model_id and edit(image, instruction, seed=...)",
                found=type(backend).__name__,
                fix="e.g. CachedImageBackend(make_image_backend('gemini:...'), 'cache/')",
            )
        super().__init__(backend, directory)
        self.cache_unseeded = cache_unseeded

    def __getstate__(self) -> dict[str, Any]:
        return {"b": self.backend, "d": self.directory, "u": self.cache_unseeded}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["b"], state["d"], cache_unseeded=state["u"])  # type: ignore[misc]

    def sidecar_for(self, digest: str) -> Path:
        """The JSON sidecar of a prompt hash."""
        return self.path_for(digest)

    def lookup(self, digest: str) -> EditedImage | None:
        """The cached edit of a prompt hash, or None (missing, partial or unreadable entry)."""
        sidecar = self.sidecar_for(digest)
        try:
            entry = self._entry(digest)
            image, meta = entry["image"], entry["edited"]
            data = (sidecar.parent / Path(image["file"]).name).read_bytes()
            part = ImagePart(data, image["mime"])
            if part.sha256 != image["sha256"]:
                raise DataError("image file does not match its sidecar", found=image["file"])
            fields = ("text", "model_id", "backend", "prompt_hash", "raw", "created")
            return EditedImage(part, **{k: meta[k] for k in fields}, cached=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, DataError, ConfigError) as exc:
            log.warning("ignoring unreadable image cache entry %s: %s", sidecar, exc)
            return None

    def edit(self, image: ImagePart, instruction: str, *, seed: int | None = None) -> EditedImage:
        check_edit_request(image, instruction, seed)
        if seed is None and not self.cache_unseeded:
            self._count("bypassed")
            return self.backend.edit(image, instruction, seed=seed)
        digest = edit_prompt_hash(image, instruction, self.model_id, seed)
        return self._through(
            digest,
            lambda: self.backend.edit(image, instruction, seed=seed),
            lambda result: self._store(digest, image, instruction, seed, result),
        )

    def _store(
        self, digest: str, source: ImagePart, instruction: str, seed: int | None, r: EditedImage
    ) -> None:
        # imported here: clinfuse.core.runs pulls in more than the llm package needs
        from clinfuse.core.runs import atomic_write_bytes, atomic_write_json

        sidecar = self.sidecar_for(digest)
        ext = mimetypes.guess_extension(r.image.mime) or ".img"
        image_file = sidecar.parent / f"{digest}.{r.image.sha256[:16]}{ext}"
        atomic_write_bytes(image_file, r.image.data)
        meta = r.meta()
        meta.pop("image")
        meta.pop("cached")
        entry = {
            "format": IMAGE_CACHE_FORMAT,
            "prompt_hash": digest,
            "request": {
                "model_id": self.model_id,
                "instruction": instruction,
                "source": {"mime": source.mime, "sha256": source.sha256},
                "seed": seed,
            },
            "image": {
                "file": image_file.name,
                "mime": r.image.mime,
                "bytes": len(r.image.data),
                "sha256": r.image.sha256,
            },
            "edited": meta,
        }
        atomic_write_json(sidecar, entry)
