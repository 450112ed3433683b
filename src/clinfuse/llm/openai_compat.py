"""A backend for any server that speaks the OpenAI chat-completions schema (standard library only).

OpenAI itself, Azure-style proxies, vLLM, llama.cpp ``server``, Ollama, LM Studio, LiteLLM, ...::

    POST {base_url}/chat/completions
    {"model": ..., "temperature": ..., "max_tokens": ..., "seed": ..., "top_p": ...,
     "stop": [...], "response_format": {"type": "json_object"},   # the last only with json_mode
     "messages": [{"role": ..., "content": "<text>" | [
         {"type": "text", "text": ...},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}]}]}

Failures and what happens to them:

- connection refused/reset, timeout, HTTP 408/409/429, 5xx: retried ``max_retries`` times (the
  official client's set). The wait before retry ``k`` (0-based) is ``backoff * 2**k`` seconds, or
  the server's ``Retry-After`` when it sends one; either is capped at ``max_wait``.
- any other 4xx (bad request, auth, unknown model): :class:`~clinfuse.llm.base.LLMError` at once,
  with the server's own message and ``status``.
- a 2xx whose body is not a chat completion: :class:`~clinfuse.llm.base.LLMError` at once.
- with a :class:`~clinfuse.llm.ratelimit.RateLimiter`, every attempt (retries too) first waits
  for a token.
- still failing after the retries: :class:`~clinfuse.llm.base.LLMError` naming the last failure
  (e.g. ``timed out after 60s``).

There is no base URL by default, so that no prompt (which may hold patient data) goes to a cloud
endpoint unless someone wrote that endpoint down. The API key is never logged, and is masked as
``***`` in any server message that echoes it.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
from clinfuse.llm.ratelimit import RateLimiter

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
_RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx; as the official client


def _fix_for_status(status: int, key_env: str | None) -> str:
    key_fix = f"set the API key in ${key_env} or pass api_key=" if key_env else "pass api_key="
    fixes = {
        400: "check the model name, max_tokens, and whether the server supports json_mode/images",
        401: key_fix,
        403: f"{key_fix}; check that the key may use this model",
        404: "check base_url (OpenAI-compatible servers usually end in /v1) and the model name",
        413: "shorten the prompt or send smaller images",
        422: "check the model name, max_tokens, and whether the server supports json_mode/images",
    }
    return fixes.get(status, "see the server's message")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None.

    Example:
        >>> parse_retry_after("7"), parse_retry_after("soon")
        (7.0, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def server_message(body: bytes) -> str:
    """The readable part of an error body: ``{"error": {"message": ...}}``, ``detail``, or text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        for candidate in (err, data.get("message"), data.get("detail")):
            if isinstance(candidate, str):
                return candidate
    return text[:500]


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (an API key) masked as ``***``.

    Example:
        >>> redact("bad key sk-123", "sk-123")
        'bad key ***'
    """
    return text.replace(secret, "***") if secret else text


SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-goog-api-key", "api-key", "x-api-key", "cookie"}
)
"""Headers that carry credentials: never forwarded to another origin on a redirect."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


class _SameOriginAuth(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, but drops every credential header (and any header whose
    value holds the secret) when the new URL has another scheme, host or port."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for store in (new.headers, new.unredirected_hdrs):
                for name in list(store):
                    value = str(store[name])
                    if name.lower() in SENSITIVE_HEADERS or (self.secret and self.secret in value):
                        del store[name]
            log.warning(
                "redirect to another origin (%s): credentials not forwarded",
                urllib.parse.urlsplit(newurl).netloc,
            )
        return new


def open_url(request: urllib.request.Request, timeout: float, secret: str | None = None) -> Any:
    """``urllib.request.urlopen`` whose redirects never carry credentials to another origin."""
    opener = urllib.request.build_opener(_SameOriginAuth(secret))
    return opener.open(request, timeout=timeout)


class HTTPTransport:
    """POSTs a body under the retry rules of the module docstring; shared by the HTTP backends.

    Args:
        label: what messages call the caller (its ``model_id``).
        timeout: seconds for connecting and for each read.
        max_retries: retries after the first attempt for connection errors, timeouts, 408/409/429
            and 5xx.
        backoff: first wait in seconds; it doubles with each retry.
        max_wait: cap on any single wait, ``Retry-After`` included.
        sleep: the waiting function (tests pass a recorder).
        rate_limiter: acquired before every attempt (retries too); None for no limit.
        fix: the ``fix`` text for a status that is not retried (default: generic advice).
        retry_hint: seconds to wait read from an error body, used when the reply has no
            ``Retry-After`` header (Gemini sends ``google.rpc.RetryInfo``).

    Holds no secret: :meth:`post` masks the one it is given in all it logs and raises.
    """

    def __init__(
        self,
        label: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        rate_limiter: RateLimiter | None = None,
        fix: Callable[[int], str] | None = None,
        retry_hint: Callable[[bytes], float | None] | None = None,
    ) -> None:
        numbers = {"timeout": timeout, "backoff": backoff, "max_wait": max_wait}
        for name, value in numbers.items():
            if not (isinstance(value, int | float) and value >= 0):
                raise ConfigError(f"bad {name}", expected="a number >= 0", found=repr(value))
        if not (isinstance(max_retries, int) and max_retries >= 0):
            raise ConfigError("bad max_retries", expected="an int >= 0", found=repr(max_retries))
        if not (rate_limiter is None or isinstance(rate_limiter, RateLimiter)):
            raise ConfigError(
                "bad rate_limiter",
                expected="a clinfuse.llm.ratelimit.RateLimiter or None",
                found=type(rate_limiter).__name__,
            )
        self.label = label
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_wait = float(max_wait)
        self.sleep = sleep
        self.rate_limiter = rate_limiter
        self.fix = fix or partial(_fix_for_status, key_env=None)
        self.retry_hint = retry_hint

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], secret: str | None = None
    ) -> bytes:
        """The body of the first 2xx answer to ``POST url``; :class:`LLMError` if none came."""
        attempts = self.max_retries + 1
        last, last_status = "", None
        for attempt in range(attempts):
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
            retry_after = None
            try:
                with open_url(request, self.timeout, secret) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                error_body = _read(exc)
                message = redact(server_message(error_body), secret)
                last, last_status = f"HTTP {exc.code}: {message}", exc.code
                if not (exc.code in _RETRY_STATUS or exc.code >= 500):
                    raise LLMError(
                        f"{self.label} refused the request: HTTP {exc.code}: {message}",
                        status=exc.code,
                        expected="a 2xx answer",
                        found=f"HTTP {exc.code} from {url}",
                        fix=self.fix(exc.code),
                    ) from None
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
                if retry_after is None and self.retry_hint is not None:
                    retry_after = self.retry_hint(error_body)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                last, last_status = redact(self.describe(exc), secret), None
            if attempt + 1 == attempts:
                break
            wait = min(
                self.max_wait, self.backoff * 2**attempt if retry_after is None else retry_after
            )
            log.warning(
                "%s: %s; retry %d/%d in %.2fs",
                self.label,
                last,
                attempt + 1,
                self.max_retries,
                wait,
            )
            self.sleep(wait)
        raise LLMError(
            f"{self.label}: no answer after {attempts} attempt(s): {last}",
            status=last_status,
            expected=f"a 2xx answer from {url}",
            found=last,
            fix="check that the server is up and reachable; raise timeout= or max_retries= "
            "for slow or busy servers",
        )

    def describe(self, exc: BaseException) -> str:
        """One line on a connection failure: ``timed out after 60s``, ``ConnectionRefused...``."""
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError):
            return f"timed out after {self.timeout:g}s"
        return f"{type(reason).__name__}: {reason}"

    def decode_json(
        self, raw: bytes, *, expected: str, fix: str, secret: str | None = None
    ) -> dict[str, Any]:
        """``raw`` as a JSON object; anything else raises :class:`LLMError` (not retried)."""
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise LLMError(
                f"{self.label} answered with malformed JSON",
                expected=expected,
                found=redact(raw[:200].decode("utf-8", "replace"), secret) or "(empty body)",
                fix=fix,
            )
        return data


def _content(m: Message) -> str | list[dict[str, Any]]:
    parts = m.parts
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    encoders: dict[type, Callable[[Any], dict[str, Any]]] = {
        TextPart: lambda p: {"type": "text", "text": p.text},
        ImagePart: lambda p: {"type": "image_url", "image_url": {"url": p.data_uri()}},
    }
    return [encoders[type(p)](p) for p in parts]


class KeyedHTTPBackend:
    """Base of the HTTP backends: ``model_id`` and an API key read from ``api_key_env``. The
    key is never printed (``repr`` says whether one is set) nor pickled: an unpickled backend
    reads it from ``api_key_env`` again (a key passed in directly stays in its process)."""

    model_id: str
    api_key_env: str | None
    _api_key: str | None

    def _check_endpoint(
        self, model: Any, base_url: Any, server: str, example: str, fix: str = ""
    ) -> None:
        """A :class:`ConfigError` unless ``model`` is a non-empty name and ``base_url`` an
        http(s) URL (``server`` and ``example`` word the messages)."""
        if not (isinstance(model, str) and model.strip()):
            raise ConfigError(f"{type(self).__name__} needs a model name", found=repr(model))
        if not (isinstance(base_url, str) and base_url.startswith(("http://", "https://"))):
            raise ConfigError(
                f"bad base_url for {server}",
                expected=f"an http(s) URL such as {example!r}",
                found=repr(base_url),
                fix=fix or "pass base_url=... (an http or https URL)",
            )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"{type(self).__name__}(model_id={self.model_id!r}, api_key={key})"

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_api_key"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        env = self.api_key_env
        self._api_key = (os.environ.get(env) if env else None) or None


class OpenAICompatBackend(KeyedHTTPBackend):
    """Chat completions from an OpenAI-compatible HTTP server.

    Args:
        model: the server's model name (``gpt-4o-mini``, ``Qwen/Qwen2.5-VL-7B-Instruct``, ...).
        base_url: the API root, e.g. ``http://localhost:8000/v1`` (``/chat/completions`` is added).
        api_key: the key itself; when None it is read from the environment variable ``api_key_env``.
            With no key at all no ``Authorization`` header is sent (local servers need none).
        api_key_env: environment variable holding the key (``OPENAI_API_KEY``).
        timeout: seconds for connecting and for each read.
        max_retries: retries after the first attempt for connection errors, timeouts, 429 and 5xx.
        backoff: first wait in seconds; it doubles with each retry.
        max_wait: cap on any single wait, ``Retry-After`` included.
        sleep: the waiting function (tests pass a recorder).
        headers: extra HTTP headers (e.g. an organisation or project header).
        rate_limiter: a :class:`~clinfuse.llm.ratelimit.RateLimiter` taken before every attempt
            (share one between backends that share a quota); None for no limit.

    ``model_id`` is ``f"{model}@{base_url}"``.
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = DEFAULT_KEY_ENV,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_wait: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        headers: Mapping[str, str] | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self._check_endpoint(
            model,
            base_url,
            "an OpenAI-compatible server",
            "http://localhost:8000/v1",
            "pass base_url=... or write the spec as 'openai:<model>@<url>'",
        )
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model_id = f"{model}@{self.base_url}"
        self.api_key_env = api_key_env
        self._api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None) or None
        self._transport = HTTPTransport(
            self.model_id,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_wait=max_wait,
            sleep=sleep,
            rate_limiter=rate_limiter,
            fix=partial(_fix_for_status, key_env=api_key_env),
        )
        self.timeout = self._transport.timeout
        self.max_retries = max_retries
        self.backoff = self._transport.backoff
        self.max_wait = self._transport.max_wait
        self._headers = dict(headers or {})

    # -- request ---------------------------------------------------------------------------------
    def request_body(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> dict[str, Any]:
        """The JSON body POSTed for ``messages`` (unset options are left out)."""
        config = config or GenerationConfig()
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": _content(m)} for m in messages],
            "temperature": config.temperature,
        }
        optional = {
            "max_tokens": config.max_tokens,
            "seed": config.seed,
            "top_p": config.top_p,
            "stop": list(config.stop) or None,
            "response_format": {"type": "json_object"} if config.json_mode else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion:
        """POST the request, retrying transient failures; see the module docstring."""
        config = config or GenerationConfig()
        digest = prompt_hash(messages, self.model_id, config)
        body = json.dumps(self.request_body(messages, config)).encode("utf-8")
        log.debug("POST %s model=%s prompt_hash=%s", self.url, self.model, digest[:12])
        data = self._post(body)
        text, usage = self._parse(data)
        return Completion(
            text=text,
            model_id=self.model_id,
            backend=self.backend,
            prompt_hash=digest,
            usage=usage,
            raw=data,
        )

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "clinfuse-llm",
            **self._headers,
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        raw = self._transport.post(self.url, body, headers, secret=self._api_key)
        return self._transport.decode_json(
            raw,
            expected="a JSON object (an OpenAI chat completion)",
            fix="check that base_url points at an OpenAI-compatible API (usually .../v1)",
            secret=self._api_key,
        )

    def _parse(self, data: dict[str, Any]) -> tuple[str, dict[str, int]]:
        if "choices" not in data and "error" in data:
            message = self._redact(server_message(json.dumps(data).encode()))
            raise LLMError(f"{self.model_id} answered with an error: {message}", found=message)
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # some servers return text parts
            texts = [p.get("text") for p in content if isinstance(p, dict)]
            content = "".join(t for t in texts if isinstance(t, str)) if texts else None
        if not isinstance(content, str):
            reason = first.get("finish_reason") if isinstance(first, dict) else None
            raise LLMError(
                f"{self.model_id} answered without text",
                expected='{"choices": [{"message": {"content": "<text>"}}]}',
                found=self._redact(json.dumps(data)[:300]) + f" (finish_reason={reason!r})",
                fix="check the server's logs; a refusal or tool call has no text content",
            )
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        counts = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
        return content, counts


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read() or b""
    except (OSError, http.client.HTTPException):
        return b""


def resolve_base_url(kind: str, arg: str, kw: dict[str, Any]) -> tuple[str, str]:
    """``(model, base_url)`` of a spec ``<kind>:<model>[@<url>]``; pops ``base_url`` from ``kw``.

    Without ``@url`` the URL is ``kw["base_url"]`` or ``$OPENAI_BASE_URL``.

    Example:
        >>> resolve_base_url("openai", "gpt-image-1@http://127.0.0.1:8000/v1", {})
        ('gpt-image-1', 'http://127.0.0.1:8000/v1')
    """
    model, _, url = arg.partition("@")
    if url and kw.get("base_url") not in (None, url):
        raise ConfigError(
            "two base URLs for one backend",
            expected="the URL in the spec or base_url=, not both",
            found=f"{url!r} and {kw['base_url']!r}",
        )
    base_url = url or kw.pop("base_url", None) or os.environ.get(BASE_URL_ENV)
    kw.pop("base_url", None)
    if not base_url:
        raise ConfigError(
            f"no base URL for '{kind}:{arg}'",
            expected=f"'{kind}:<model>@<base_url>', base_url=..., or ${BASE_URL_ENV}",
            found=f"'{kind}:{arg}'",
            fix=f"e.g. '{kind}:{model or 'gpt-4o-mini'}@https://api.openai.com/v1'",
        )
    return model, base_url


@BACKENDS.register("openai")
def _openai(arg: str, **kw: Any) -> OpenAICompatBackend:
    """``openai:<model>[@<base_url>]``; without ``@url``: ``base_url=`` or ``$OPENAI_BASE_URL``."""
    model, base_url = resolve_base_url("openai", arg, kw)
    return OpenAICompatBackend(model, base_url, **kw)
