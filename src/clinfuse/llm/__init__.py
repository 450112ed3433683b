"""Text and vision model backends behind one protocol, with content-addressed disk caching.

>>> from clinfuse.llm import CachedBackend, Message, make_backend
>>> backend = make_backend("local:echo")          # or "openai:gpt-4o-mini@http://localhost:8000/v1"
>>> backend.generate([Message("user", "sinus rhythm, 72 bpm")]).text
'sinus rhythm, 72 bpm'

Standard library only (HTTP through ``urllib``). See :mod:`clinfuse.llm.base` for the types,
:mod:`clinfuse.llm.openai_compat`, :mod:`clinfuse.llm.local` and :mod:`clinfuse.llm.cache`.
"""

from __future__ import annotations

from clinfuse.llm.base import (
    BACKENDS,
    Completion,
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    TextBackend,
    TextPart,
    canonical_request,
    make_backend,
    prompt_hash,
)
from clinfuse.llm.cache import CachedBackend
from clinfuse.llm.local import CallableBackend, EchoBackend
from clinfuse.llm.openai_compat import OpenAICompatBackend

__all__ = [
    "BACKENDS",
    "CachedBackend",
    "CallableBackend",
    "Completion",
    "EchoBackend",
    "GenerationConfig",
    "ImagePart",
    "LLMError",
    "Message",
    "OpenAICompatBackend",
    "TextBackend",
    "TextPart",
    "canonical_request",
    "make_backend",
    "prompt_hash",
]
