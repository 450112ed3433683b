"""Text and vision model backends behind one protocol, with content-addressed disk caching.

>>> from clinfuse.llm import CachedBackend, Message, make_backend
>>> backend = make_backend("local:echo")          # or "openai:gpt-4o-mini@http://localhost:8000/v1"
>>> backend.generate([Message("user", "sinus rhythm, 72 bpm")]).text
'sinus rhythm, 72 bpm'

Standard library only (HTTP through ``urllib``). See :mod:`clinfuse.llm.base` for the types,
:mod:`clinfuse.llm.openai_compat`, :mod:`clinfuse.llm.gemini`, :mod:`clinfuse.llm.local` and
:mod:`clinfuse.llm.cache`; image editors (:func:`make_image_backend`) in
:mod:`clinfuse.llm.images`; rate limits in :mod:`clinfuse.llm.ratelimit`; the Report Arena
(pairwise LLM judges, Bradley-Terry leaderboard) in :mod:`clinfuse.llm.arena`.
"""

from __future__ import annotations

from clinfuse.llm.arena import (
    ArenaResult,
    LLMPairJudge,
    PairJudge,
    ScoreJudge,
    bradley_terry,
    run_arena,
)
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
from clinfuse.llm.gemini import GeminiBackend, GeminiImageBackend
from clinfuse.llm.images import (
    IMAGE_BACKENDS,
    CachedImageBackend,
    EditedImage,
    ImageEditBackend,
    OpenAIImageBackend,
    edit_prompt_hash,
    make_image_backend,
)
from clinfuse.llm.local import CallableBackend, EchoBackend
from clinfuse.llm.openai_compat import OpenAICompatBackend
from clinfuse.llm.ratelimit import RateLimiter

__all__ = [
    "ArenaResult",
    "BACKENDS",
    "IMAGE_BACKENDS",
    "CachedBackend",
    "CachedImageBackend",
    "CallableBackend",
    "Completion",
    "EchoBackend",
    "EditedImage",
    "GeminiBackend",
    "GeminiImageBackend",
    "GenerationConfig",
    "ImageEditBackend",
    "ImagePart",
    "LLMError",
    "LLMPairJudge",
    "Message",
    "OpenAICompatBackend",
    "OpenAIImageBackend",
    "PairJudge",
    "RateLimiter",
    "ScoreJudge",
    "TextBackend",
    "TextPart",
    "bradley_terry",
    "canonical_request",
    "edit_prompt_hash",
    "make_backend",
    "make_image_backend",
    "prompt_hash",
    "run_arena",
]
