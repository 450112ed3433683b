"""llm.base: message/config validation, prompt hashes (stable, sensitive), registry, protocol."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from clinfuse.core.errors import ConfigError, DataError, UnknownNameError
from clinfuse.llm import (
    BACKENDS,
    CachedBackend,
    CallableBackend,
    Completion,
    EchoBackend,
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    OpenAICompatBackend,
    TextBackend,
    TextPart,
    make_backend,
    prompt_hash,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))

# The hash of this request, computed once and written down: it must never change silently
# (a change invalidates every cache entry and every prompt hash recorded in built data sets).
GOLDEN_MESSAGES = [
    Message("system", "You are a cardiologist."),
    Message("user", ["Interpret this ECG. Rate 72 bpm, QTc 431 ms.", ImagePart(PNG, "image/png")]),
]
GOLDEN_CONFIG = GenerationConfig(temperature=0.0, max_tokens=256, seed=7, stop=("END",))
GOLDEN_HASH = "ed3754c4ca7fbb0444feb8f4c178285b5305455a50cc0b0bac7b3f4001d97bcc"


def test_prompt_hash_matches_the_recorded_value() -> None:
    assert prompt_hash(GOLDEN_MESSAGES, "gpt-4o@http://x/v1", GOLDEN_CONFIG) == GOLDEN_HASH


@pytest.mark.parametrize("hashseed", ["0", "12345"])
def test_prompt_hash_is_the_same_in_another_process(hashseed: str) -> None:
    code = (
        "from clinfuse.llm.base import GenerationConfig, ImagePart, Message, prompt_hash\n"
        f"PNG = {PNG!r}\n"
        "msgs = [Message('system', 'You are a cardiologist.'), Message('user', "
        "['Interpret this ECG. Rate 72 bpm, QTc 431 ms.', ImagePart(PNG, 'image/png')])]\n"
        "cfg = GenerationConfig(temperature=0.0, max_tokens=256, seed=7, stop=('END',))\n"
        "print(prompt_hash(msgs, 'gpt-4o@http://x/v1', cfg))\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == GOLDEN_HASH


def test_prompt_hash_changes_with_every_field() -> None:
    base_msgs = GOLDEN_MESSAGES
    model = "gpt-4o@http://x/v1"
    cfg = GOLDEN_CONFIG
    sys_msg, user_msg = base_msgs
    text, image = user_msg.parts
    variants = {
        "system role": [Message("user", sys_msg.content), user_msg],
        "system text": [Message("system", "You are a nurse."), user_msg],
        "user text": [sys_msg, Message("user", [TextPart(text.text + " "), image])],
        "image bytes": [sys_msg, Message("user", [text, ImagePart(PNG + b"\x00", "image/png")])],
        "image mime": [sys_msg, Message("user", [text, ImagePart(PNG, "image/jpeg")])],
        "part order": [sys_msg, Message("user", [image, text])],
        "image dropped": [sys_msg, Message("user", [text])],
        "message order": [user_msg, sys_msg],
        "extra turn": [*base_msgs, Message("assistant", "")],
    }
    configs = {
        f.name: dataclasses.replace(cfg, **{f.name: value})
        for f, value in zip(
            dataclasses.fields(GenerationConfig),
            [0.7, 257, 8, 0.9, ("END", "STOP"), True],
            strict=True,
        )
    }
    hashes = {"base": prompt_hash(base_msgs, model, cfg)}
    hashes |= {k: prompt_hash(m, model, cfg) for k, m in variants.items()}
    hashes |= {f"config.{k}": prompt_hash(base_msgs, model, c) for k, c in configs.items()}
    hashes["model_id"] = prompt_hash(base_msgs, "gpt-4o@http://y/v1", cfg)
    assert len(set(hashes.values())) == len(hashes), hashes
    assert set(configs) == {"temperature", "max_tokens", "seed", "top_p", "stop", "json_mode"}


def test_prompt_hash_ignores_spelling_of_the_same_request() -> None:
    a = prompt_hash([Message("user", "hi")], "m", GenerationConfig(temperature=0, stop=["x"]))
    b = prompt_hash([Message("user", (TextPart("hi"),))], "m", GenerationConfig(stop="x"))
    c = prompt_hash([Message("user", ["hi"])], "m", GenerationConfig(stop=("x",)))
    assert a == b == c
    assert prompt_hash([Message("user", "hi")], "m") == prompt_hash(
        [Message("user", "hi")], "m", GenerationConfig()
    )
    # an image enters by its bytes: equal bytes from different objects hash alike
    img1, img2 = ImagePart(bytes(PNG)), ImagePart(bytearray(PNG))
    assert prompt_hash([Message("user", [img1])], "m") == prompt_hash(
        [Message("user", [img2])], "m"
    )


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Message("bot", "hi"), "role"),
        (lambda: Message("user", [1.5]), "part"),
        (lambda: Message("user", 42), "content"),
        (lambda: ImagePart("not bytes", "image/png"), "data"),
        (lambda: ImagePart(PNG, "text/plain"), "mime"),
        (lambda: GenerationConfig(temperature=-0.1), "temperature"),
        (lambda: GenerationConfig(max_tokens=0), "max_tokens"),
        (lambda: GenerationConfig(top_p=0.0), "top_p"),
        (lambda: GenerationConfig(top_p=1.5), "top_p"),
        (lambda: GenerationConfig(seed=1.5), "seed"),
        (lambda: GenerationConfig(seed=True), "seed"),
        (lambda: GenerationConfig(stop=("",)), "stop"),
        (lambda: GenerationConfig(json_mode="yes"), "json_mode"),
    ],
)
def test_bad_inputs_raise_config_errors(make, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.expected is not None
    assert field.split(".")[0].lower() in str(info.value).lower()


def test_message_text_and_image_file(tmp_path: Path) -> None:
    p = tmp_path / "ecg.png"
    p.write_bytes(PNG)
    img = ImagePart.from_path(p)
    assert img.mime == "image/png" and img.data == PNG
    m = Message("user", ["rate 72", img, "QTc 431"])
    assert m.text == "rate 72\nQTc 431"
    assert "bytes" in repr(img) and "\\x89" not in repr(img)
    with pytest.raises(DataError, match="not found"):
        ImagePart.from_path(tmp_path / "missing.png")


def test_completion_round_trips_and_rejects_garbage() -> None:
    c = Completion("t", "m", "local:echo", "ab" * 32, usage={"total_tokens": 3}, raw={"x": 1})
    assert Completion.from_dict(c.to_dict()) == c
    assert c.created.endswith("+00:00")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.text = "other"  # type: ignore[misc]
    bad = c.to_dict() | {"usage": "3"}
    with pytest.raises(DataError, match="usage"):
        Completion.from_dict(bad)
    with pytest.raises(DataError):
        Completion.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# registry and protocol


def test_make_backend_parses_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert set(BACKENDS.names()) >= {"local", "openai"}
    echo = make_backend("local:echo")
    assert isinstance(echo, EchoBackend) and echo.model_id == "echo"
    assert make_backend("local:echo", template="[{text}]").template == "[{text}]"
    oa = make_backend("openai:gpt-4o-mini@http://localhost:8000/v1", timeout=5, max_retries=0)
    assert isinstance(oa, OpenAICompatBackend)
    assert oa.model_id == "gpt-4o-mini@http://localhost:8000/v1"
    assert (oa.model, oa.url) == ("gpt-4o-mini", "http://localhost:8000/v1/chat/completions")
    assert (oa.timeout, oa.max_retries) == (5.0, 0)
    # model names with slashes and colons survive; the base URL may come from a keyword or env
    oa2 = make_backend("openai:Qwen/Qwen2.5-VL-7B:int4", base_url="http://h:1/v1/")
    assert oa2.model_id == "Qwen/Qwen2.5-VL-7B:int4@http://h:1/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example/v1")
    assert make_backend("openai:m").model_id == "m@https://api.example/v1"
    cb = make_backend("local:callable", fn=lambda ms: "x", model_id="rules-v1")
    assert isinstance(cb, CallableBackend) and cb.model_id == "rules-v1"


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        ("opena:gpt-4o", UnknownNameError, "did you mean: openai"),
        ("local:ecoh", UnknownNameError, "did you mean: echo"),
        ("echo", ConfigError, "<kind>:<name>"),
        (":echo", ConfigError, "<kind>:<name>"),
        ("local:", ConfigError, "<kind>:<name>"),
        ("openai:gpt-4o", ConfigError, "no base URL"),
        ("openai:gpt-4o@ftp://x", ConfigError, "http(s) URL"),
    ],
)
def test_make_backend_errors(
    spec: str, error: type[Exception], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(error) as info:
        make_backend(spec)
    assert needle in str(info.value)


def test_make_backend_rejects_two_base_urls() -> None:
    with pytest.raises(ConfigError, match="two base URLs"):
        make_backend("openai:m@http://a/v1", base_url="http://b/v1")


def test_protocol_isinstance(tmp_path: Path) -> None:
    class NoGenerate:
        model_id = "x"

    class NoModelId:
        def generate(self, messages, config=None): ...

    backends = [
        EchoBackend(),
        CallableBackend(lambda ms: "", "f"),
        OpenAICompatBackend("m", "http://localhost:1/v1"),
        CachedBackend(EchoBackend(), tmp_path),
    ]
    assert all(isinstance(b, TextBackend) for b in backends)
    assert not any(isinstance(o, TextBackend) for o in (object(), NoGenerate(), NoModelId()))
    with pytest.raises(ConfigError, match="wraps a text backend"):
        CachedBackend(NoGenerate(), tmp_path)  # type: ignore[arg-type]


def test_backends_and_errors_pickle_for_process_pools(tmp_path: Path) -> None:
    err = LLMError("refused", status=400, expected="2xx", found="HTTP 400", fix="check")
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.expected, back.found, back.fix, str(back)) == (
        400,
        "2xx",
        "HTTP 400",
        "check",
        str(err),
    )
    cached = CachedBackend(EchoBackend("T:{text}"), tmp_path)
    cached.generate([Message("user", "x")])
    copy = pickle.loads(pickle.dumps(cached))
    assert copy.generate([Message("user", "x")]).cached is True
    assert copy.stats["hits"] == 1 and copy.directory == tmp_path
    oa = pickle.loads(pickle.dumps(OpenAICompatBackend("m", "http://localhost:1/v1", api_key="k")))
    assert oa.model_id == "m@http://localhost:1/v1"


def test_docstring_examples() -> None:
    import doctest

    import clinfuse.llm
    from clinfuse.llm import base, cache, local, openai_compat

    for mod in (clinfuse.llm, base, cache, local, openai_compat):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, mod.__name__
        assert result.attempted > 0, mod.__name__
