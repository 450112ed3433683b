"""Gemini over REST (``generateContent``), standard library only: a text backend and an editor.

::

    POST {base_url}/models/{model}:generateContent          header x-goog-api-key: $GEMINI_API_KEY
    {"contents": [{"role": "user" | "model", "parts": [
         {"text": ...}, {"inline_data": {"mime_type": "image/png", "data": "<base64>"}}]}],
     "systemInstruction": {"parts": [{"text": ...}]},            # the system messages, if any
     "generationConfig": {"temperature", "maxOutputTokens", "seed", "topP", "stopSequences",
                          "responseMimeType": "application/json",   # json_mode only
                          "thinkingConfig": {...}, "responseModalities": [...]}}

The answer is read from ``candidates[0].content.parts``: text parts (``thought`` parts left out)
for :class:`GeminiBackend`, the first image part (``inlineData`` or ``inline_data``) for
:class:`GeminiImageBackend`. Retries, backoff, ``Retry-After`` and rate limits are those of
:class:`~clinfuse.llm.openai_compat.HTTPTransport`; a 429 without ``Retry-After`` waits the
``retryDelay`` of the ``google.rpc.RetryInfo`` in its body. A body that is not JSON, an ``error``
body, a blocked prompt, or a reply without text (or without an image) raises
:class:`~clinfuse.llm.base.LLMError` at once.

The key is read only from the environment (``$GEMINI_API_KEY`` unless ``api_key_env`` says
otherwise), sent only as the ``x-goog-api-key`` header, never logged, never in results or errors,
and never pickled (a pickled backend reads the environment again). ``api_key_env=None`` sends no
key (for proxies and loopback fakes).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from clinfuse.core.errors import ConfigError
from clinfuse.llm.base import (
    BACKENDS,
    Completion,
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    TextPart,
    prompt_hash,
)
from clinfuse.llm.images import (
    IMAGE_BACKENDS,
    EditedImage,
    api_key,
    check_edit_request,
    decode_image,
    edit_prompt_hash,
    no_image_error,
    strip_payloads,
)
from clinfuse.llm.openai_compat import HTTPTransport, KeyedHTTPBackend, redact
from clinfuse.llm.ratelimit import RateLimiter

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
DEFAULT_KEY_ENV = "GEMINI_API_KEY"
_ROLES = {"user": "user", "assistant": "model"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_USAGE = {
    "promptTokenCount": "prompt_tokens",
    "candidatesTokenCount": "completion_tokens",
    "totalTokenCount": "total_tokens",
    "thoughtsTokenCount": "thoughts_tokens",
    "cachedContentTokenCount": "cached_tokens",
}
_CONFIG_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "temperature": ("temperature", float),
    "max_tokens": ("maxOutputTokens", int),
    "seed": ("seed", int),
    "top_p": ("topP", float),
    "stop": ("stopSequences", list),
    "json_mode": ("responseMimeType", lambda _: "application/json"),
}
"""GenerationConfig field -> (Gemini generationConfig key, value map); unset/falsy fields go."""


def retry_delay(body: bytes) -> float | None:
    """Seconds from the ``google.rpc.RetryInfo`` of a Gemini error body, or None.

    Example:
        >>> retry_delay(b'{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.'
        ...             b'RetryInfo", "retryDelay": "37.5s"}]}}')
        37.5
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for d in details if isinstance(details, list) else []:
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(d.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _fix(status: int, key_env: str | None) -> str:
    key = f"check the key in ${key_env}" if key_env else "check the API key"
    fixes = {
        400: f"check the model name and the request (an invalid key is a 400 too: {key})",
        401: key,
        403: f"{key}; check that the key may use this model (and the API is enabled)",
        404: "check the model name (e.g. 'gemini-2.5-pro') and base_url (.../v1beta)",
        413: "send smaller images",
    }
    return fixes.get(status, "see the server's message")


def part_json(part: TextPart | ImagePart) -> dict[str, Any]:
    """One Gemini ``Part``: ``{"text"}`` or ``{"inline_data": {"mime_type", "data"}}``."""
    if isinstance(part, TextPart):
        return {"text": part.text}
    data = base64.b64encode(part.data).decode("ascii")
    return {"inline_data": {"mime_type": part.mime, "data": data}}


def generation_config(config: GenerationConfig) -> dict[str, Any]:
    """Gemini's ``generationConfig`` for a :class:`GenerationConfig` (unset options left out).

    Example:
        >>> generation_config(GenerationConfig(max_tokens=64, json_mode=True))
        {'temperature': 0.0, 'maxOutputTokens': 64, 'responseMimeType': 'application/json'}
    """
    out = {}
    for name, (key, convert) in _CONFIG_FIELDS.items():
        value = getattr(config, name)
        if value is not None and value is not False and value != ():
            out[key] = convert(value)
    return out


class _GeminiREST(KeyedHTTPBackend):
    """The shared part: endpoint, key, transport, and reading ``candidates[0]``."""

    backend = "gemini"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key_env: str | None = DEFAULT_KEY_ENV,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rate_limit_per_min: float | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._check_endpoint(model, base_url, "Gemini", DEFAULT_BASE_URL)
        self.model = model.removeprefix("models/")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/models/{self.model}:generateContent"
        self.model_id = f"{self.model}@{self.base_url}"
        self.api_key_env = api_key_env
        self._api_key = api_key(api_key_env, self.model_id, required=api_key_env is not None)
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
            fix=partial(_fix, key_env=api_key_env),
            retry_hint=retry_delay,
        )

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "clinfuse-llm",
        }
        if self._api_key:
            headers["x-goog-api-key"] = self._api_key
        raw = self._transport.post(
            self.url, json.dumps(body).encode("utf-8"), headers, secret=self._api_key
        )
        data = self._transport.decode_json(
            raw,
            expected="a JSON object (a Gemini GenerateContentResponse)",
            fix="check that base_url points at the Gemini API (.../v1beta)",
            secret=self._api_key,
        )
        if "candidates" not in data and "error" in data:
            message = redact(json.dumps(data["error"])[:300], self._api_key)
            raise LLMError(f"{self.model_id} answered with an error: {message}", found=message)
        return data

    def _parts(self, data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """``candidates[0].content.parts`` (non-thought) and a one-line account of the reply."""
        candidates = data.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(first, dict):
            feedback = data.get("promptFeedback")
            block = feedback.get("blockReason") if isinstance(feedback, dict) else None
            return [], f"no candidates (promptFeedback.blockReason={block!r})"
        content = first.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        parts = [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
        parts = [p for p in parts if not p.get("thought")]
        kinds = ", ".join(sorted({k for p in parts for k in p if k != "thoughtSignature"}))
        reason = first.get("finishReason")
        return parts, f"finishReason={reason!r}, parts=[{kinds}]"

    def _usage(self, data: dict[str, Any]) -> dict[str, int]:
        meta = data.get("usageMetadata")
        meta = meta if isinstance(meta, dict) else {}
        return {
            name: v
            for key, name in _USAGE.items()
            if isinstance(v := meta.get(key), int) and not isinstance(v, bool)
        }


def _texts(parts: list[dict[str, Any]]) -> list[str]:
    return [p["text"] for p in parts if isinstance(p.get("text"), str)]


class GeminiBackend(_GeminiREST):
    """Text (and vision-input) completions from Gemini's ``generateContent``.

    Args:
        model: ``gemini-2.5-pro``, ``gemini-2.5-flash``, ... (a ``models/`` prefix is dropped).
        base_url: the API root (``.../v1beta``); loopback fakes in tests.
        api_key_env: environment variable holding the key; None sends none.
        timeout, max_retries, backoff, max_wait, sleep: as
            :class:`~clinfuse.llm.openai_compat.HTTPTransport`.
        rate_limit_per_min: requests a minute (a :class:`RateLimiter` of its own), or None;
            ``rate_limiter`` shares one limiter between backends instead.
        thinking_budget: ``thinkingConfig.thinkingBudget`` (tokens; 0 turns thinking off where
            the model allows), None for the model's default.
        include_thoughts: ask for thought summaries (kept in ``raw``, not in ``text``).

    ``model_id`` is ``f"{model}@{base_url}"``. System messages become ``systemInstruction``
    (text only); ``assistant`` turns have the role ``model``.
    """

    def __init__(
        self,
        model: str,
        *,
        thinking_budget: int | None = None,
        include_thoughts: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.thinking_budget = thinking_budget
        self.include_thoughts = include_thoughts

    def request_body(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> dict[str, Any]:
        """The JSON body POSTed for ``messages``."""
        config = config or GenerationConfig()
        system = [m for m in messages if m.role == "system"]
        if any(isinstance(p, ImagePart) for m in system for p in m.parts):
            raise ConfigError(
                "Gemini system instructions hold text only",
                expected="images in user messages",
                found="an ImagePart in a system message",
                fix="move the image into the user message",
            )
        body: dict[str, Any] = {
            "contents": [
                {"role": _ROLES[m.role], "parts": [part_json(p) for p in m.parts]}
                for m in messages
                if m.role != "system"
            ],
            "generationConfig": generation_config(config),
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": m.text} for m in system]}
        thinking = {
            "thinkingBudget": self.thinking_budget,
            "includeThoughts": self.include_thoughts,
        }
        thinking = {k: v for k, v in thinking.items() if v is not None and v is not False}
        if thinking:
            body["generationConfig"]["thinkingConfig"] = thinking
        return body

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion:
        """POST the request, retrying transient failures; the text of the first candidate."""
        config = config or GenerationConfig()
        digest = prompt_hash(messages, self.model_id, config)
        body = self.request_body(messages, config)
        log.debug("POST %s prompt_hash=%s", self.url, digest[:12])
        data = self._call(body)
        parts, account = self._parts(data)
        texts = _texts(parts)
        if not texts:
            raise LLMError(
                f"{self.model_id} answered without text",
                expected='{"candidates": [{"content": {"parts": [{"text": "..."}]}}]}',
                found=account,
                fix="a SAFETY/RECITATION finishReason or blockReason is a refusal; "
                "MAX_TOKENS with no text: raise max_tokens or lower thinking_budget",
            )
        return Completion(
            text="".join(texts),
            model_id=self.model_id,
            backend=self.backend,
            prompt_hash=digest,
            usage=self._usage(data),
            raw=data,
        )


class GeminiImageBackend(_GeminiREST):
    """Image edits with a Gemini image model (``gemini-2.5-flash-image``).

    One ``generateContent`` call with ``[{"text": instruction}, {"inline_data": source}]`` and
    ``responseModalities ["TEXT", "IMAGE"]``; the result is the first non-thought image part of
    ``candidates[0]``, and the text parts are kept as ``EditedImage.text``. ``seed`` goes to
    ``generationConfig.seed``. Arguments as :class:`GeminiBackend`, plus ``generation``: extra
    ``generationConfig`` entries (e.g. ``{"imageConfig": {"aspectRatio": "1:1"}}``).
    """

    def __init__(
        self, model: str, *, generation: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        super().__init__(model, **kw)
        self.generation = dict(generation or {})

    def request_body(
        self, image: ImagePart, instruction: str, seed: int | None = None
    ) -> dict[str, Any]:
        """The JSON body POSTed for one edit."""
        generation: dict[str, Any] = {"responseModalities": ["TEXT", "IMAGE"]}
        if seed is not None:
            generation["seed"] = seed
        parts = [part_json(TextPart(instruction)), part_json(image)]
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": generation | self.generation,
        }

    def edit(self, image: ImagePart, instruction: str, *, seed: int | None = None) -> EditedImage:
        """POST the edit, retrying transient failures; the first returned image."""
        check_edit_request(image, instruction, seed)
        digest = edit_prompt_hash(image, instruction, self.model_id, seed)
        log.debug("POST %s prompt_hash=%s", self.url, digest[:12])
        data = self._call(self.request_body(image, instruction, seed))
        parts, account = self._parts(data)
        for p in parts:
            inline = p.get("inlineData", p.get("inline_data"))
            if not isinstance(inline, dict):
                continue
            mime = inline.get("mimeType", inline.get("mime_type"))
            if isinstance(mime, str) and not mime.startswith("image/"):
                continue
            return EditedImage(
                image=decode_image(inline.get("data"), mime or "image/png", self.model_id),
                text="".join(_texts(parts)),
                model_id=self.model_id,
                backend=self.backend,
                prompt_hash=digest,
                raw=strip_payloads(data),
            )
        said = " ".join(_texts(parts))[:200]
        raise no_image_error(
            self.model_id,
            f"{account}" + (f"; text: {redact(said, self._api_key)!r}" if said else ""),
            "an IMAGE_SAFETY/SAFETY finishReason or blockReason is a refusal; a text-only "
            "answer often asks a question: make the instruction a direct edit command; check "
            "that the model outputs images (e.g. gemini-2.5-flash-image)",
        )


def _split(arg: str, kw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    model, _, url = arg.partition("@")
    if url:
        if kw.get("base_url") not in (None, url):
            raise ConfigError(
                "two base URLs for one backend",
                expected="the URL in the spec or base_url=, not both",
                found=f"{url!r} and {kw['base_url']!r}",
            )
        kw = kw | {"base_url": url}
    return model, kw


@BACKENDS.register("gemini")
def _gemini(arg: str, **kw: Any) -> GeminiBackend:
    """``gemini:<model>[@<base_url>]``."""
    model, kw = _split(arg, kw)
    return GeminiBackend(model, **kw)


@IMAGE_BACKENDS.register("gemini")
def _gemini_images(arg: str, **kw: Any) -> GeminiImageBackend:
    """``gemini:<model>[@<base_url>]``."""
    model, kw = _split(arg, kw)
    return GeminiImageBackend(model, **kw)
