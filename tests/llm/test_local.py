"""llm.local: the echo and callable backends answer deterministically and honour stop/max_tokens."""

from __future__ import annotations

import pytest

from clinfuse.core.errors import ConfigError
from clinfuse.llm import (
    CallableBackend,
    EchoBackend,
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    prompt_hash,
)
from clinfuse.llm.local import apply_limits

CHAT = [
    Message("system", "be brief"),
    Message("user", "first question"),
    Message("assistant", "first answer"),
    Message("user", ["Sinus rhythm, 72 bpm.", ImagePart(b"png-bytes"), "QTc 431 ms."]),
]


def test_echo_returns_the_last_user_text_and_a_correct_hash() -> None:
    b = EchoBackend()
    c = b.generate(CHAT)
    assert c.text == "Sinus rhythm, 72 bpm.\nQTc 431 ms."
    assert (c.model_id, c.backend, c.cached) == ("echo", "local:echo", False)
    assert c.prompt_hash == prompt_hash(CHAT, "echo", GenerationConfig())
    # 2 + 2 + 2 + 7 prompt words, 7 answer words
    assert c.usage == {"prompt_tokens": 13, "completion_tokens": 7, "total_tokens": 20}


def test_echo_template_is_part_of_the_model_id() -> None:
    a, b = EchoBackend("Findings: {text}"), EchoBackend("Impression: {text}")
    assert a.generate([Message("user", "LVH")]).text == "Findings: LVH"
    assert a.model_id != b.model_id != "echo"
    assert a.model_id == EchoBackend("Findings: {text}").model_id  # stable across instances
    with pytest.raises(ConfigError, match="template"):
        EchoBackend("{unknown}")


def test_echo_without_user_message_raises() -> None:
    with pytest.raises(LLMError, match="no user message"):
        EchoBackend().generate([Message("system", "x")])


@pytest.mark.parametrize(
    ("text", "stop", "max_tokens", "want"),
    [
        ("a b c. d e", (), None, "a b c. d e"),
        ("a b c. d e", (".",), None, "a b c"),
        ("a b c. d e", ("d", "."), None, "a b c"),  # earliest stop string wins
        ("a  b\nc d", (), 3, "a  b\nc"),  # spacing kept inside the cut
        ("a b c. d e", (".",), 2, "a b"),
        ("a b", (), 5, "a b"),
        ("END at start", ("END",), None, ""),
    ],
)
def test_apply_limits(text: str, stop: tuple[str, ...], max_tokens: int | None, want: str) -> None:
    assert apply_limits(text, GenerationConfig(stop=stop, max_tokens=max_tokens)) == want


def test_callable_backend_passes_messages_and_applies_limits() -> None:
    seen: list[list[Message]] = []

    def rules(messages: list[Message]) -> str:
        seen.append(messages)
        return "Sinus rhythm. Normal axis. Normal ECG."

    b = CallableBackend(rules, model_id="meeti-rules-v1")
    cfg = GenerationConfig(stop=("Normal ECG",), max_tokens=100)
    c = b.generate(tuple(CHAT), cfg)
    assert c.text == "Sinus rhythm. Normal axis. "
    assert seen == [CHAT] and isinstance(seen[0], list)
    assert c.prompt_hash == prompt_hash(CHAT, "meeti-rules-v1", cfg)
    assert c.backend == "local:callable"


def test_callable_backend_rejects_bad_functions_and_results() -> None:
    with pytest.raises(LLMError, match="returned no string") as info:
        CallableBackend(lambda ms: {"text": "x"}, model_id="f").generate(CHAT)
    assert info.value.found == "dict"
    with pytest.raises(ConfigError, match="model_id"):
        CallableBackend(lambda ms: "", model_id="")
    with pytest.raises(ConfigError, match="needs a function"):
        CallableBackend("not callable", model_id="f")  # type: ignore[arg-type]
