"""Deterministic offline backends for tests, demos and rule-based generators.

- :class:`EchoBackend` answers with the last user text, or a fixed template filled with it.
- :class:`CallableBackend` wraps any ``fn(messages) -> str`` (e.g. a rule-based ECG interpreter).

Both honour ``GenerationConfig.stop`` and ``max_tokens``, counting a token as a
whitespace-separated word, so code that relies on those settings can be tested offline.
``temperature``, ``seed``, ``top_p`` and ``json_mode`` do not change their answers (they still
enter the prompt hash).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from clinfuse.core.errors import ConfigError
from clinfuse.core.registry import Registry
from clinfuse.llm.base import (
    BACKENDS,
    Completion,
    GenerationConfig,
    LLMError,
    Message,
    TextBackend,
    prompt_hash,
)

LOCAL: Registry[Callable[..., TextBackend]] = Registry("local LLM backend")
"""Local backends by the name after ``local:`` in a spec."""

_WORD = re.compile(r"\S+")


def apply_limits(text: str, config: GenerationConfig) -> str:
    """Cut ``text`` at the first stop string, then after ``max_tokens`` words.

    Example:
        >>> apply_limits("a b c. d e", GenerationConfig(stop=".", max_tokens=2))
        'a b'
    """
    cuts = [i for i in (text.find(s) for s in config.stop) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    if config.max_tokens is not None:
        words = list(_WORD.finditer(text))
        if len(words) > config.max_tokens:
            text = text[: words[config.max_tokens - 1].end()]
    return text


def _usage(messages: Sequence[Message], text: str) -> dict[str, int]:
    prompt = sum(len(_WORD.findall(m.text)) for m in messages)
    completion = len(_WORD.findall(text))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _complete(
    backend: str, model_id: str, messages: Sequence[Message], config: GenerationConfig, text: str
) -> Completion:
    text = apply_limits(text, config)
    return Completion(
        text=text,
        model_id=model_id,
        backend=backend,
        prompt_hash=prompt_hash(messages, model_id, config),
        usage=_usage(messages, text),
    )


@LOCAL.register("echo")
class EchoBackend:
    """Answers with the text of the last user message, or ``template.format(text=<that text>)``.

    ``model_id`` is ``"echo"``, or ``"echo/<12 hex of the template's SHA-256>"`` with a template,
    so that cached answers of different templates never mix.

    Example:
        >>> EchoBackend("Findings: {text}").generate([Message("user", "sinus rhythm")]).text
        'Findings: sinus rhythm'
    """

    backend = "local:echo"

    def __init__(self, template: str | None = None) -> None:
        if template is not None:
            try:
                template.format(text="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    "bad EchoBackend template",
                    expected="a str.format template whose only field is {text}",
                    found=f"{template!r} ({type(exc).__name__}: {exc})",
                    fix="double literal braces: '{{' and '}}'",
                ) from None
        self.template = template
        digest = hashlib.sha256(template.encode()).hexdigest()[:12] if template else None
        self.model_id = f"echo/{digest}" if digest else "echo"

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion:
        config = config or GenerationConfig()
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise LLMError(
                "EchoBackend got no user message",
                expected="at least one Message('user', ...)",
                found=f"roles {[m.role for m in messages]}",
            )
        text = users[-1].text
        if self.template is not None:
            text = self.template.format(text=text)
        return _complete(self.backend, self.model_id, messages, config, text)

    def __repr__(self) -> str:
        return f"EchoBackend(model_id={self.model_id!r})"


@LOCAL.register("callable")
class CallableBackend:
    """Wraps ``fn(messages) -> str`` as a backend (it receives a fresh list of the messages).

    ``model_id`` names the function *and its version*: it is part of the prompt hash, so change
    it whenever ``fn``'s behaviour changes, or a cache will return the old function's answers.

    Example:
        >>> b = CallableBackend(lambda ms: ms[-1].text.upper(), model_id="upper-v1")
        >>> b.generate([Message("user", "qt prolonged")]).text
        'QT PROLONGED'
    """

    backend = "local:callable"

    def __init__(self, fn: Callable[[list[Message]], str], model_id: str) -> None:
        if not callable(fn):
            raise ConfigError(
                "CallableBackend needs a function",
                expected="fn(messages: list[Message]) -> str",
                found=type(fn).__name__,
            )
        if not (isinstance(model_id, str) and model_id):
            raise ConfigError(
                "CallableBackend needs a model_id",
                expected="a non-empty string naming the function and its version",
                found=repr(model_id),
                fix="e.g. model_id='meeti-rules-v1'",
            )
        self.fn = fn
        self.model_id = model_id

    def generate(
        self, messages: Sequence[Message], config: GenerationConfig | None = None
    ) -> Completion:
        config = config or GenerationConfig()
        text = self.fn(list(messages))
        if not isinstance(text, str):
            raise LLMError(
                f"the function behind {self.model_id!r} returned no string",
                expected="str",
                found=type(text).__name__,
                fix="make fn return the generated text",
            )
        return _complete(self.backend, self.model_id, messages, config, text)

    def __repr__(self) -> str:
        return f"CallableBackend(model_id={self.model_id!r})"


@BACKENDS.register("local")
def _local(arg: str, **kw: Any) -> TextBackend:
    """``local:echo`` -> EchoBackend(**kw); ``local:callable`` -> CallableBackend(**kw)."""
    return LOCAL.get(arg)(**kw)
