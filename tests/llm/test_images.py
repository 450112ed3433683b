"""llm.images: OpenAI images/edits on a loopback fake, the editor registry, the image cache."""

from __future__ import annotations

import base64
import json
import logging
import pickle
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pytest
from tests.llm.test_gemini import FakeServer, Reply, Seen

from clinfuse.core.errors import ConfigError, UnknownNameError
from clinfuse.llm import (
    CachedImageBackend,
    EditedImage,
    ImageEditBackend,
    ImagePart,
    LLMError,
    OpenAIImageBackend,
    edit_prompt_hash,
    make_image_backend,
)
from clinfuse.llm.images import IMAGE_CACHE_FORMAT, strip_payloads

KEY = "sk-img-0123456789abcdef"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3 + b"\r\n--not-a-boundary\r\n"
EDITED = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 2


def edits_reply(data: bytes = EDITED) -> dict[str, Any]:
    item = {"b64_json": base64.b64encode(data).decode(), "revised_prompt": "an effusion"}
    return {"created": 1700000000, "data": [item]}


def form(seen: Seen) -> dict[str, tuple[str | None, str, bytes]]:
    """The multipart body parsed by the standard library: name -> (filename, type, bytes)."""
    head = f"Content-Type: {seen.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + seen.body)
    assert msg.is_multipart()
    return {
        p.get_param("name", header="content-disposition"): (
            p.get_filename(),
            p.get_content_type(),
            p.get_payload(decode=True),
        )
        for p in msg.iter_parts()
    }


@pytest.fixture(scope="module")
def _running() -> Iterator[FakeServer]:
    s = FakeServer("/v1")
    s.thread.start()
    yield s
    s.close()


@pytest.fixture
def server(_running: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return _running.reset(Reply(200, edits_reply()))


def editor(server: FakeServer, **kw: Any) -> tuple[OpenAIImageBackend, list[float]]:
    sleeps: list[float] = []
    kw = {"timeout": 5.0, "sleep": sleeps.append} | kw
    return OpenAIImageBackend("gpt-image-test", server.url, **kw), sleeps


SOURCE = ImagePart(JPEG, "image/jpeg")
ASK = "Add a small right apical pneumothorax; keep grain, markers and contrast."


# ---------------------------------------------------------------------------------------------
# OpenAI images/edits


def test_multipart_request_and_result(server: FakeServer) -> None:
    b, sleeps = editor(server, extra_fields={"size": "1024x1024"})
    out = b.edit(SOURCE, ASK, seed=5)
    (req,) = server.seen
    assert req.path == "/v1/images/edits"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    fields = form(req)
    assert fields["image"] == ("image.jpg", "image/jpeg", JPEG)  # the bytes round-trip
    text = {k: v[2].decode() for k, v in fields.items() if k != "image"}
    assert text == {
        "model": "gpt-image-test",
        "prompt": ASK,
        "n": "1",
        "response_format": "b64_json",
        "size": "1024x1024",
    }  # no seed: OpenAI has none
    assert out.image == ImagePart(EDITED, "image/png") and out.text == "an effusion"
    assert (out.backend, out.model_id) == ("openai", f"gpt-image-test@{server.url}")
    assert out.prompt_hash == edit_prompt_hash(SOURCE, ASK, out.model_id, 5)
    assert out.raw == {
        "created": 1700000000,
        "data": [{"b64_json": f"<{len(EDITED)} bytes>", "revised_prompt": "an effusion"}],
    }
    assert sleeps == [] and isinstance(b, ImageEditBackend)


def test_optional_fields(server: FakeServer) -> None:
    editor(server, response_format=None, send_seed=True)[0].edit(SOURCE, ASK, seed=5)
    editor(server, response_format=None, send_seed=True)[0].edit(SOURCE, ASK)
    with_seed, without = (form(s) for s in server.seen)
    assert "response_format" not in with_seed and with_seed["seed"][2] == b"5"
    assert "seed" not in without


def test_429_then_500_then_success(server: FakeServer) -> None:
    server.script = [
        Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "3"}),
        Reply(500, b"oops"),
    ]
    b, sleeps = editor(server, backoff=0.01)
    assert b.edit(SOURCE, ASK).image.data == EDITED
    assert sleeps == [3.0, 0.02] and len(server.seen) == 3
    assert all(form(s) == form(server.seen[0]) for s in server.seen)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"Internal Server Error", "malformed JSON"),
        ({"data": [{"url": "https://example.invalid/x.png"}]}, "reply carries no image"),
        ({"data": []}, "reply carries no image"),
        ({"error": {"message": "content policy"}}, "reply carries no image"),
        ({"data": [{"b64_json": "%%%"}]}, "not valid base64"),
    ],
)
def test_bad_replies_raise_llm_error(server: FakeServer, body: Any, error: str) -> None:
    server.script = [Reply(200, body)]
    b, sleeps = editor(server)
    with pytest.raises(LLMError, match=error) as info:
        b.edit(SOURCE, ASK)
    assert info.value.fix and sleeps == [] and len(server.seen) == 1


def test_key_only_from_env_and_never_shown(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b, _ = editor(server, backoff=0.0)
    server.script = [
        Reply(502, {"error": {"message": f"upstream saw {KEY}"}}),
        Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}),
    ]
    with caplog.at_level(logging.DEBUG, logger="clinfuse.llm"), pytest.raises(LLMError) as info:
        b.edit(SOURCE, ASK)
    assert info.value.status == 401 and "upstream saw ***" in caplog.text
    for where in (caplog.text, str(info.value), repr(b)):
        assert KEY not in where
    assert KEY.encode() not in pickle.dumps(b)
    monkeypatch.delenv("OPENAI_API_KEY")
    editor(server)[0].edit(SOURCE, ASK)  # a local server: no key, no header
    assert "authorization" not in server.seen[-1].headers


def test_bad_edit_requests_are_config_errors(server: FakeServer) -> None:
    b, _ = editor(server)
    for image, instruction, seed in [(JPEG, ASK, None), (SOURCE, "  ", None), (SOURCE, ASK, 1.5)]:
        with pytest.raises(ConfigError):
            b.edit(image, instruction, seed=seed)  # type: ignore[arg-type]
    assert server.seen == []


def test_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    b = make_image_backend("openai:gpt-image-1@http://127.0.0.1:8000/v1/")
    assert isinstance(b, OpenAIImageBackend) and b.url == "http://127.0.0.1:8000/v1/images/edits"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert make_image_backend("openai:dall-e-2").model_id == "dall-e-2@http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(ConfigError, match="no base URL"):
        make_image_backend("openai:gpt-image-1")
    with pytest.raises(ConfigError, match="bad image edit backend spec"):
        make_image_backend("gpt-image-1")
    with pytest.raises(UnknownNameError, match="did you mean: gemini"):
        make_image_backend("gemin:x")


# ---------------------------------------------------------------------------------------------
# hashing, raw payloads


def test_edit_prompt_hash_depends_on_every_input() -> None:
    base = edit_prompt_hash(SOURCE, ASK, "m", 1)
    variants = [
        edit_prompt_hash(ImagePart(JPEG + b"\x00", "image/jpeg"), ASK, "m", 1),
        edit_prompt_hash(ImagePart(JPEG, "image/png"), ASK, "m", 1),
        edit_prompt_hash(SOURCE, ASK + " ", "m", 1),
        edit_prompt_hash(SOURCE, ASK, "m2", 1),
        edit_prompt_hash(SOURCE, ASK, "m", 2),
        edit_prompt_hash(SOURCE, ASK, "m", None),
    ]
    assert len({base, *variants}) == 7
    assert base == edit_prompt_hash(ImagePart(bytearray(JPEG), "image/jpeg"), ASK, "m", 1)


def test_strip_payloads_keeps_everything_but_the_bytes() -> None:
    b64 = base64.b64encode(EDITED).decode()
    raw = {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"text": "done"},
                        {"inline_data": {"mime_type": "image/png", "data": b64}},
                    ]
                }
            }
        ],
        "data": [{"b64_json": b64, "url": None}],
    }
    out = strip_payloads(raw)
    assert b64 not in json.dumps(out)
    parts = out["candidates"][0]["content"]["parts"]
    assert parts == [
        {"text": "done"},
        {"inline_data": {"mime_type": "image/png", "data": f"<{len(EDITED)} bytes>"}},
    ]
    assert out["data"] == [{"b64_json": f"<{len(EDITED)} bytes>", "url": None}]
    assert raw["data"][0]["b64_json"] == b64  # the input is not modified


# ---------------------------------------------------------------------------------------------
# the disk cache


class Counting:
    """An editor that appends its call number to the source bytes (thread-safe)."""

    model_id = "count-editor-v1"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def edit(self, image: ImagePart, instruction: str, *, seed: int | None = None) -> EditedImage:
        with self._lock:
            self.calls += 1
            n = self.calls
        h = edit_prompt_hash(image, instruction, self.model_id, seed)
        return EditedImage(
            ImagePart(image.data + bytes([n]), "image/png"),
            f"#{n}",
            self.model_id,
            "local:count",
            h,
            raw={"n": n},
        )


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cache_hit_returns_identical_bytes_without_a_server_call(
    server: FakeServer, tmp_path: Path
) -> None:
    c = CachedImageBackend(editor(server)[0], tmp_path)
    first = c.edit(SOURCE, ASK, seed=0)
    again = CachedImageBackend(editor(server)[0], tmp_path).edit(SOURCE, ASK, seed=0)
    assert len(server.seen) == 1  # the second object answered from disk
    assert again.cached and not first.cached
    assert again.image == first.image and again.image.data == EDITED
    assert (again.text, again.prompt_hash, again.raw, again.created) == (
        first.text,
        first.prompt_hash,
        first.raw,
        first.created,
    )
    h = first.prompt_hash
    name = f"{h}.{first.image.sha256[:16]}.png"
    assert files(tmp_path) == sorted([f"{h[:2]}/{h}.json", f"{h[:2]}/{name}"])  # no tmp files
    sidecar = json.loads((tmp_path / h[:2] / f"{h}.json").read_text())
    assert sidecar["format"] == IMAGE_CACHE_FORMAT
    assert sidecar["request"] == {
        "model_id": first.model_id,
        "instruction": ASK,
        "source": {"mime": "image/jpeg", "sha256": SOURCE.sha256},
        "seed": 0,
    }
    assert sidecar["image"]["sha256"] == first.image.sha256 and sidecar["image"]["file"] == name
    assert pickle.loads(pickle.dumps(c)).edit(SOURCE, ASK, seed=0).cached


def test_cache_keys_seed_instruction_and_source(tmp_path: Path) -> None:
    inner = Counting()
    c = CachedImageBackend(inner, tmp_path)
    outs = [
        c.edit(SOURCE, ASK, seed=0),
        c.edit(SOURCE, ASK, seed=1),
        c.edit(SOURCE, "Remove the effusion.", seed=0),
        c.edit(ImagePart(EDITED), ASK, seed=0),
        c.edit(SOURCE, ASK, seed=0),
        c.edit(SOURCE, ASK, seed=1),
    ]
    assert inner.calls == 4 and [o.text for o in outs] == ["#1", "#2", "#3", "#4", "#1", "#2"]
    assert c.stats == {"hits": 2, "misses": 4, "bypassed": 0, "write_errors": 0}


def test_unseeded_edits_bypass_unless_asked(tmp_path: Path) -> None:
    inner = Counting()
    c = CachedImageBackend(inner, tmp_path)
    assert [c.edit(SOURCE, ASK).text for _ in range(2)] == ["#1", "#2"]
    assert c.stats["bypassed"] == 2 and files(tmp_path) == []
    keep = CachedImageBackend(inner, tmp_path, cache_unseeded=True)
    assert [keep.edit(SOURCE, ASK).text for _ in range(2)] == ["#3", "#3"]


def test_damaged_entries_are_misses_and_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = Counting()
    c = CachedImageBackend(inner, tmp_path)
    h = c.edit(SOURCE, ASK, seed=0).prompt_hash
    (image,) = (tmp_path / h[:2]).glob(f"{h}.*.png")
    image.write_bytes(b"\x89PNG truncated")  # the image no longer matches its sidecar
    assert c.edit(SOURCE, ASK, seed=0).text == "#2" and "does not match" in caplog.text
    assert c.edit(SOURCE, ASK, seed=0).text == "#2"  # rewritten whole
    for image in (tmp_path / h[:2]).glob(f"{h}.*.png"):
        image.unlink()  # a sidecar without its image
    assert c.edit(SOURCE, ASK, seed=0).text == "#3"
    (tmp_path / h[:2] / f"{h}.json").write_text("{not json")
    assert c.edit(SOURCE, ASK, seed=0).text == "#4"
    assert inner.calls == 4


def test_concurrent_writers_leave_whole_entries(tmp_path: Path) -> None:
    inner = Counting()
    c = CachedImageBackend(inner, tmp_path)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(5):
                c.edit(SOURCE, ASK, seed=(i + k) % 3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sidecars = sorted(tmp_path.rglob("*.json"))
    assert len(sidecars) == 3  # one per seed
    for p in tmp_path.rglob("*"):  # no temporary files; every image named after its bytes
        if p.is_file() and p.suffix == ".png":
            assert p.name.split(".")[1] == ImagePart(p.read_bytes()).sha256[:16]
        else:
            assert p.is_dir() or p.suffix == ".json"
    fresh = CachedImageBackend(Counting(), tmp_path)
    outs = [fresh.edit(SOURCE, ASK, seed=seed) for seed in range(3)]
    assert all(o.cached for o in outs) and fresh.backend.calls == 0  # type: ignore[attr-defined]


def test_cache_wraps_only_editors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="wraps an image edit backend"):
        CachedImageBackend(object(), tmp_path)  # type: ignore[arg-type]
