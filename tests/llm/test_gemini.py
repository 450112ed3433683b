"""llm.gemini against a fake Gemini REST server on loopback.

The server records every request (path, headers, raw body) and plays a script of replies; the
backends' sleep function is a recorder, so backoff and Retry-After are checked without waiting.
``FakeServer`` is generic (any body, any reply) and is reused by tests/llm/test_images.py.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from clinfuse.core.errors import ConfigError
from clinfuse.llm import (
    BACKENDS,
    IMAGE_BACKENDS,
    GeminiBackend,
    GeminiImageBackend,
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    RateLimiter,
    edit_prompt_hash,
    make_backend,
    make_image_backend,
    prompt_hash,
)

KEY = "AIza-test-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2
EDITED = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1))


# ---------------------------------------------------------------------------------------------
# a generic fake server


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | None = None  # None: the server's default reply
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServer:
    """A loopback HTTP server that records requests and answers from ``script`` (then default)."""

    def __init__(self, prefix: str = "") -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.default = Reply()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length", 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.seen.append(Seen(self.path, headers, self.rfile.read(n)))
                reply = fake.script.pop(0) if fake.script else fake.default
                payload = reply.body if reply.body is not None else {}
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(reply.status)
                for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{prefix}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reset(self, default: Reply) -> FakeServer:
        self.script, self.seen, self.default = [], [], default
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def _running() -> Iterator[FakeServer]:
    s = FakeServer("/v1beta")
    s.thread.start()
    yield s
    s.close()


def text_reply(*texts: str, finish: str = "STOP") -> dict[str, Any]:
    parts = [{"text": "I considered the ECG", "thought": True}] + [{"text": t} for t in texts]
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": {
            "promptTokenCount": 11,
            "candidatesTokenCount": 3,
            "totalTokenCount": 20,
            "thoughtsTokenCount": 6,
        },
        "modelVersion": "gemini-test-001",
    }


def image_reply(data: bytes, text: str = "", camel: bool = True) -> dict[str, Any]:
    b64 = base64.b64encode(data).decode()
    inline = (
        {"inlineData": {"mimeType": "image/png", "data": b64}}
        if camel
        else {"inline_data": {"mime_type": "image/png", "data": b64}}
    )
    parts = ([{"text": text}] if text else []) + [inline]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]}


@pytest.fixture
def server(_running: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return _running.reset(Reply(200, text_reply("Sinus ", "rhythm.")))


def text_backend(server: FakeServer, **kw: Any) -> tuple[GeminiBackend, list[float]]:
    sleeps: list[float] = []
    kw = {"base_url": server.url, "timeout": 5.0, "sleep": sleeps.append} | kw
    return GeminiBackend("gemini-test", **kw), sleeps


def image_backend(server: FakeServer, **kw: Any) -> tuple[GeminiImageBackend, list[float]]:
    sleeps: list[float] = []
    kw = {"base_url": server.url, "timeout": 5.0, "sleep": sleeps.append} | kw
    return GeminiImageBackend("gemini-image-test", **kw), sleeps


CHAT = [
    Message("system", "You read ECGs."),
    Message("user", ["Interpret this strip.", ImagePart(PNG, "image/png")]),
    Message("assistant", "Which lead?"),
    Message("user", "Lead II."),
]


# ---------------------------------------------------------------------------------------------
# text


def test_request_body_headers_and_completion(server: FakeServer) -> None:
    b, sleeps = text_backend(server)
    cfg = GenerationConfig(
        temperature=0.2, max_tokens=64, seed=3, top_p=0.9, stop=("END",), json_mode=True
    )
    c = b.generate(CHAT, cfg)
    (req,) = server.seen
    assert req.path == "/v1beta/models/gemini-test:generateContent"
    assert req.headers["x-goog-api-key"] == KEY and "authorization" not in req.headers
    body = req.json()
    image = body["contents"][0]["parts"][1]["inline_data"]
    assert image["mime_type"] == "image/png" and base64.b64decode(image["data"]) == PNG
    image["data"] = "<png>"
    assert body == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Interpret this strip."},
                    {"inline_data": {"mime_type": "image/png", "data": "<png>"}},
                ],
            },
            {"role": "model", "parts": [{"text": "Which lead?"}]},
            {"role": "user", "parts": [{"text": "Lead II."}]},
        ],
        "systemInstruction": {"parts": [{"text": "You read ECGs."}]},
        "generationConfig": {
            "temperature": 0.2,
            "maxOutputTokens": 64,
            "seed": 3,
            "topP": 0.9,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
    }
    assert c.text == "Sinus rhythm."  # the thought part is left out
    assert c.usage == {
        "prompt_tokens": 11,
        "completion_tokens": 3,
        "total_tokens": 20,
        "thoughts_tokens": 6,
    }
    assert (c.model_id, c.backend, c.cached) == (f"gemini-test@{server.url}", "gemini", False)
    assert c.prompt_hash == prompt_hash(CHAT, c.model_id, cfg)
    assert c.raw is not None and c.raw["modelVersion"] == "gemini-test-001"
    assert sleeps == []


def test_defaults_and_thinking_config(server: FakeServer) -> None:
    b, _ = text_backend(server, thinking_budget=128, include_thoughts=True)
    b.generate([Message("user", "hi")])
    body = server.seen[0].json()
    assert "systemInstruction" not in body
    assert body["generationConfig"] == {
        "temperature": 0.0,
        "thinkingConfig": {"thinkingBudget": 128, "includeThoughts": True},
    }


def test_500_then_success_retries_with_backoff(server: FakeServer) -> None:
    server.script = [Reply(500, {"error": {"code": 500, "message": "internal"}}), Reply(503)]
    b, sleeps = text_backend(server, backoff=0.01)
    assert b.generate(CHAT).text == "Sinus rhythm."
    assert sleeps == [0.01, 0.02] and len(server.seen) == 3
    assert server.seen[0].body == server.seen[2].body  # the same request each time


def test_429_honours_retry_after_then_google_retry_info(server: FakeServer) -> None:
    quota = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.5s"}
            ],
        }
    }
    server.script = [Reply(429, quota, {"Retry-After": "2"}), Reply(429, quota), Reply(429)]
    b, sleeps = text_backend(server, backoff=0.01, max_wait=60.0)
    assert b.generate(CHAT).text == "Sinus rhythm."
    # the header wins; the body's RetryInfo without one; plain backoff 0.01 * 2**2 without either
    assert sleeps == [2.0, 37.5, 0.04]


def test_retries_exhausted_name_the_last_failure(server: FakeServer) -> None:
    server.script = [Reply(503, {"error": {"message": "The model is overloaded."}})] * 2
    b, sleeps = text_backend(server, max_retries=1, backoff=0.01)
    with pytest.raises(LLMError, match="model is overloaded") as info:
        b.generate(CHAT)
    assert info.value.status == 503 and "2 attempt" in str(info.value)


def test_404_raises_at_once_with_a_fix(server: FakeServer) -> None:
    server.script = [Reply(404, {"error": {"code": 404, "message": "models/x is not found"}})]
    b, sleeps = text_backend(server)
    with pytest.raises(LLMError, match="models/x is not found") as info:
        b.generate(CHAT)
    assert info.value.status == 404 and "model name" in str(info.value.fix)
    assert sleeps == [] and len(server.seen) == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<html>502 Bad Gateway</html>", "malformed JSON"),
        (b"", "malformed JSON"),
        ({"error": {"code": 400, "message": "bad part"}}, "bad part"),
        ({"promptFeedback": {"blockReason": "SAFETY"}}, "blockReason='SAFETY'"),
        (text_reply(finish="MAX_TOKENS"), "finishReason='MAX_TOKENS'"),
        (image_reply(EDITED), "without text"),
    ],
)
def test_bad_answers_raise_without_retry(server: FakeServer, body: Any, needle: str) -> None:
    server.script = [Reply(200, body)]
    b, sleeps = text_backend(server)
    with pytest.raises(LLMError, match=needle):
        b.generate(CHAT)
    assert sleeps == [] and len(server.seen) == 1


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("MY_GEMINI_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$GEMINI_API_KEY"):
        GeminiBackend("gemini-2.5-pro")
    with pytest.raises(ConfigError, match=r"\$MY_GEMINI_KEY"):
        make_image_backend("gemini:gemini-2.5-flash-image", api_key_env="MY_GEMINI_KEY")


def test_no_key_env_sends_no_key(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY")
    text_backend(server, api_key_env=None)[0].generate(CHAT)
    assert "x-goog-api-key" not in server.seen[0].headers


def test_key_never_in_logs_errors_results_or_pickles(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    b, _ = text_backend(server, backoff=0.0)
    c = b.generate(CHAT)
    server.script = [
        Reply(500, {"error": {"message": f"internal error for key {KEY}"}}),
        Reply(403, {"error": {"code": 403, "message": f"API key {KEY} lacks permission"}}),
    ]
    with caplog.at_level(logging.DEBUG, logger="clinfuse.llm"), pytest.raises(LLMError) as info:
        b.generate(CHAT)
    assert info.value.status == 403 and "$GEMINI_API_KEY" in str(info.value.fix)
    assert "API key *** lacks permission" in str(info.value)
    assert "internal error for key ***" in caplog.text  # the retried 500 was logged, masked
    blob = pickle.dumps(b)
    for where in (caplog.text, str(info.value), repr(info.value), repr(b), json.dumps(c.raw)):
        assert KEY not in where
    assert KEY.encode() not in blob
    assert pickle.loads(blob).generate(CHAT).text == "Sinus rhythm."  # key read again from env
    assert server.seen[-1].headers["x-goog-api-key"] == KEY


def test_image_in_a_system_message_is_refused(server: FakeServer) -> None:
    b, _ = text_backend(server)
    with pytest.raises(ConfigError, match="text only"):
        b.generate([Message("system", ["rules", ImagePart(PNG)]), Message("user", "hi")])
    assert server.seen == []


def test_rate_limiter_is_taken_before_every_attempt(server: FakeServer) -> None:
    clock = [0.0]
    waits: list[float] = []
    limiter = RateLimiter(30, clock=lambda: clock[0], sleep=waits.append)
    server.script = [Reply(500)]
    b, sleeps = text_backend(server, rate_limiter=limiter, backoff=0.0)
    b.generate(CHAT)
    b.generate(CHAT)
    assert len(server.seen) == 3 and waits == [2.0, 4.0]  # 3 attempts at 30/min, clock frozen
    assert text_backend(server, rate_limit_per_min=30)[0]._transport.rate_limiter is not None


# ---------------------------------------------------------------------------------------------
# image editing


@pytest.mark.parametrize("camel", [True, False])
def test_image_edit_round_trip(server: FakeServer, camel: bool) -> None:
    server.default = Reply(200, image_reply(EDITED, "Added a left effusion.", camel=camel))
    b, _ = image_backend(server)
    source = ImagePart(PNG, "image/png")
    out = b.edit(source, "Add a small left pleural effusion.", seed=7)
    (req,) = server.seen
    assert req.path == "/v1beta/models/gemini-image-test:generateContent"
    body = req.json()
    text, inline = body["contents"][0]["parts"]
    assert text == {"text": "Add a small left pleural effusion."}
    assert inline["inline_data"]["mime_type"] == "image/png"
    assert base64.b64decode(inline["inline_data"]["data"]) == PNG
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"], "seed": 7}
    assert out.image.data == EDITED and out.image.mime == "image/png"
    assert out.text == "Added a left effusion."
    assert (out.backend, out.model_id) == ("gemini", f"gemini-image-test@{server.url}")
    digest = edit_prompt_hash(source, "Add a small left pleural effusion.", out.model_id, 7)
    assert out.prompt_hash == digest and out.cached is False
    raw = json.dumps(out.raw)
    assert f"<{len(EDITED)} bytes>" in raw and base64.b64encode(EDITED).decode() not in raw


def test_image_thought_parts_are_skipped(server: FakeServer) -> None:
    reply = image_reply(EDITED)
    draft = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}
    reply["candidates"][0]["content"]["parts"].insert(0, {**draft, "thought": True})
    server.default = Reply(200, reply)
    assert image_backend(server)[0].edit(ImagePart(PNG), "add").image.data == EDITED


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (text_reply("Which side should the effusion be on?"), "Which side"),
        (
            {"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}]},
            "finishReason='IMAGE_SAFETY'",
        ),
        ({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, "PROHIBITED_CONTENT"),
    ],
)
def test_reply_without_image_raises(server: FakeServer, body: Any, needle: str) -> None:
    server.default = Reply(200, body)
    b, sleeps = image_backend(server)
    with pytest.raises(LLMError, match="reply carries no image") as info:
        b.edit(ImagePart(PNG), "Add an effusion.")
    assert needle in str(info.value) and info.value.fix
    assert sleeps == [] and len(server.seen) == 1


def test_image_reply_not_json_or_not_base64_raises(server: FakeServer) -> None:
    b, _ = image_backend(server)
    server.script = [Reply(200, b"{truncated")]
    with pytest.raises(LLMError, match="malformed JSON"):
        b.edit(ImagePart(PNG), "add")
    bad = image_reply(EDITED)
    bad["candidates"][0]["content"]["parts"][0]["inlineData"]["data"] = "not base64!"
    server.script = [Reply(200, bad)]
    with pytest.raises(LLMError, match="not valid base64"):
        b.edit(ImagePart(PNG), "add")


def test_image_edit_retries_429_then_500(server: FakeServer) -> None:
    server.default = Reply(200, image_reply(EDITED))
    server.script = [Reply(429, headers={"Retry-After": "0.5"}), Reply(500)]
    b, sleeps = image_backend(server, backoff=0.01)
    assert b.edit(ImagePart(PNG), "add").image.data == EDITED
    assert sleeps == [0.5, 0.02] and len(server.seen) == 3


def test_specs_and_registries(server: FakeServer) -> None:
    assert "gemini" in BACKENDS and "gemini" in IMAGE_BACKENDS
    text = make_backend(f"gemini:models/gemini-test@{server.url}", sleep=lambda s: None)
    image = make_image_backend("gemini:gemini-2.5-flash-image", base_url=server.url)
    assert isinstance(text, GeminiBackend) and text.model == "gemini-test"
    assert text.url == f"{server.url}/models/gemini-test:generateContent"
    assert isinstance(image, GeminiImageBackend)
    assert image.model_id == f"gemini-2.5-flash-image@{server.url}"
    default = make_image_backend("gemini:gemini-2.5-flash-image")
    assert default.url.startswith("https://generativelanguage.googleapis.com/v1beta/models/")
    with pytest.raises(ConfigError, match="two base URLs"):
        make_backend("gemini:m@http://a", base_url="http://b")
