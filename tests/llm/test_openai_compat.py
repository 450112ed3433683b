"""llm.openai_compat against a fake OpenAI-compatible server on loopback.

The server records every request (path, headers, JSON body) and plays a script of replies:
500 twice then success, 429 with Retry-After, 400 with an error body, malformed JSON, a slow
answer. The backend's sleep function is a recorder, so backoff is checked without waiting.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from clinfuse.llm import (
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    OpenAICompatBackend,
    prompt_hash,
)
from clinfuse.llm.openai_compat import parse_retry_after, server_message

KEY = "sk-test-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict[str, Any] | None = None  # None: a valid completion
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def completion_json(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


class FakeServer:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[Seen] = []
        self.stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n))
                fake.seen.append(
                    Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = fake.script.pop(0) if fake.script else Reply()
                if reply.delay:
                    fake.stop.wait(reply.delay)
                payload = reply.body
                if payload is None:
                    last = body["messages"][-1]["content"]
                    payload = completion_json(f"ok: {last if isinstance(last, str) else 'parts'}")
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    for k, v in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def backend(self, **kw: Any) -> tuple[OpenAICompatBackend, list[float]]:
        sleeps: list[float] = []
        kw = {"api_key": KEY, "timeout": 5.0, "sleep": sleeps.append} | kw
        return OpenAICompatBackend("gpt-test", self.url, **kw), sleeps


@pytest.fixture(scope="module")
def _running_server() -> Iterator[FakeServer]:
    s = FakeServer()
    s.thread.start()
    yield s
    s.stop.set()
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def server(_running_server: FakeServer) -> FakeServer:
    """The module's server with an empty script and request log."""
    _running_server.script, _running_server.seen = [], []
    return _running_server


USER = [Message("system", "be brief"), Message("user", "Rate 72 bpm. Interpret.")]


def test_request_body_headers_and_completion(server: FakeServer) -> None:
    b, sleeps = server.backend(headers={"OpenAI-Project": "proj-1"})
    cfg = GenerationConfig(temperature=0.2, max_tokens=64, seed=3, top_p=0.9, stop=("END",))
    c = b.generate(USER, cfg)
    (req,) = server.seen
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["openai-project"] == "proj-1"
    assert req.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Rate 72 bpm. Interpret."},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "seed": 3,
        "top_p": 0.9,
        "stop": ["END"],
    }
    assert c.text == "ok: Rate 72 bpm. Interpret."
    assert c.usage == {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
    assert c.raw is not None and c.raw["id"] == "chatcmpl-1"
    assert (c.model_id, c.backend, c.cached) == (f"gpt-test@{server.url}", "openai", False)
    assert c.prompt_hash == prompt_hash(USER, c.model_id, cfg)
    assert sleeps == []


def test_defaults_leave_options_out_and_json_mode_is_sent(server: FakeServer) -> None:
    b, _ = server.backend()
    b.generate(USER)
    b.generate(USER, GenerationConfig(json_mode=True))
    plain, js = (s.body for s in server.seen)
    assert set(plain) == {"model", "messages", "temperature"} and plain["temperature"] == 0.0
    assert js["response_format"] == {"type": "json_object"}


def test_image_part_is_sent_as_a_data_uri(server: FakeServer) -> None:
    b, _ = server.backend()
    msgs = [Message("user", ["Describe this ECG.", ImagePart(PNG, "image/png")])]
    assert b.generate(msgs).text == "ok: parts"
    text, image = server.seen[0].body["messages"][0]["content"]
    assert text == {"type": "text", "text": "Describe this ECG."}
    assert image["type"] == "image_url"
    head, _, b64 = image["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64"
    assert base64.b64decode(b64) == PNG


def test_no_key_no_authorization_header(server: FakeServer, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MY_LLM_KEY", "sk-from-env")
    server.backend(api_key=None)[0].generate(USER)
    server.backend(api_key=None, api_key_env="MY_LLM_KEY")[0].generate(USER)
    assert "authorization" not in server.seen[0].headers
    assert server.seen[1].headers["authorization"] == "Bearer sk-from-env"


def test_500_twice_then_success_retries_with_exponential_backoff(server: FakeServer) -> None:
    server.script = [Reply(500, {"error": {"message": "boom"}}), Reply(502, b"bad gateway")]
    b, sleeps = server.backend(backoff=0.5)
    assert b.generate(USER).text.startswith("ok")
    assert len(server.seen) == 3
    assert sleeps == [0.5, 1.0]
    assert all(s.body == server.seen[0].body for s in server.seen)  # the same request each time


def test_429_honours_retry_after(server: FakeServer) -> None:
    server.script = [
        Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "7"}),
        Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "500"}),
        Reply(429, {"error": {"message": "rate limited"}}),
    ]
    b, sleeps = server.backend(backoff=1.0, max_wait=60.0)
    assert b.generate(USER).text.startswith("ok")
    assert sleeps == [7.0, 60.0, 4.0]  # header; header capped; backoff * 2**2 without header


def test_retries_exhausted_raise_with_the_last_failure(server: FakeServer) -> None:
    server.script = [Reply(503, {"error": {"message": "overloaded, try later"}})] * 3
    b, sleeps = server.backend(max_retries=2, backoff=1.0)
    with pytest.raises(LLMError, match="overloaded, try later") as info:
        b.generate(USER)
    assert info.value.status == 503
    assert "3 attempt" in str(info.value)
    assert sleeps == [1.0, 2.0] and len(server.seen) == 3


def test_400_raises_at_once_with_the_servers_message(server: FakeServer) -> None:
    server.script = [
        Reply(400, {"error": {"message": "max_tokens is too large: 99999", "type": "invalid"}})
    ]
    b, sleeps = server.backend()
    with pytest.raises(LLMError) as info:
        b.generate(USER, GenerationConfig(max_tokens=99999))
    assert "max_tokens is too large: 99999" in str(info.value)
    assert info.value.status == 400 and info.value.fix
    assert sleeps == [] and len(server.seen) == 1


def test_401_fix_names_the_key_variable_and_the_key_is_never_shown(
    server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [
        Reply(500, {"error": {"message": f"internal: {KEY}"}}),
        Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}),
    ]
    b, _ = server.backend(api_key_env="MY_LLM_KEY")
    with caplog.at_level(logging.DEBUG, logger="clinfuse.llm"), pytest.raises(LLMError) as info:
        b.generate(USER)
    assert info.value.status == 401
    assert "$MY_LLM_KEY" in str(info.value)
    assert "Incorrect API key provided: ***" in str(info.value)
    assert "retry 1/3" in caplog.text  # the 500 was logged ...
    assert KEY not in caplog.text and KEY not in str(info.value) and KEY not in repr(b)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<html>502 from a proxy</html>", "malformed JSON"),
        (b"", "malformed JSON"),
        ({"choices": []}, "without text"),
        (
            {"choices": [{"message": {"content": None}, "finish_reason": "tool_calls"}]},
            "tool_calls",
        ),
        ({"error": {"message": "model overloaded"}}, "model overloaded"),
    ],
)
def test_malformed_answers_raise(server: FakeServer, body: bytes | dict, needle: str) -> None:
    server.script = [Reply(200, body)]
    b, sleeps = server.backend()
    with pytest.raises(LLMError, match=needle):
        b.generate(USER)
    assert sleeps == [] and len(server.seen) == 1  # not retried


def test_content_as_text_parts_is_joined(server: FakeServer) -> None:
    body = completion_json("")
    body["choices"][0]["message"]["content"] = [
        {"type": "text", "text": "Sinus "},
        {"type": "text", "text": "rhythm"},
    ]
    server.script = [Reply(200, body)]
    assert server.backend()[0].generate(USER).text == "Sinus rhythm"


def test_slow_server_times_out_after_the_retries(server: FakeServer) -> None:
    server.script = [Reply(delay=2.0), Reply(delay=2.0)]
    b, sleeps = server.backend(timeout=0.2, max_retries=1, backoff=0.25)
    with pytest.raises(LLMError, match=r"timed out after 0\.2s") as info:
        b.generate(USER)
    assert info.value.status is None
    assert sleeps == [0.25] and len(server.seen) == 2


def test_connection_refused_is_retried() -> None:
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    b = OpenAICompatBackend(
        "m", f"http://127.0.0.1:{port}/v1", max_retries=2, backoff=0.1, sleep=sleeps.append
    )
    with pytest.raises(LLMError, match="3 attempt") as info:
        b.generate(USER)
    assert "refused" in str(info.value).lower()
    assert sleeps == [0.1, 0.2]


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after(None) is None and parse_retry_after("later") is None


def test_server_message_forms() -> None:
    assert server_message(b'{"error": {"message": "m1"}}') == "m1"
    assert server_message(b'{"error": "m2"}') == "m2"
    assert server_message(b'{"detail": "m3"}') == "m3"
    assert server_message(b"plain text") == "plain text"
    assert server_message(b"") == "(empty body)"
