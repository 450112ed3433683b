"""The three roles of the loop (writer, editor and judge, as in arXiv 2511.00801; these
interfaces are ours [inferred]) and their model-backed implementations.

* :class:`PromptWriter`: ``initial(task, source)`` and ``refine(task, source, history)`` ->
  :class:`Written` (the edit instruction);
* :class:`Editor`: ``edit(source, instruction, seed)`` -> :class:`Edit`;
* :class:`Judge`: ``judge(task, source, edited, allowed)`` -> :class:`Verdict`.

``writer`` / ``judge`` specs go to :func:`clinfuse.llm.make_backend` (text/vision chat models);
``editor`` specs to :func:`clinfuse.llm.images.make_image_backend`. ``local`` picks the
deterministic implementations of :mod:`.local`. Each model backend gets its own
:class:`~clinfuse.llm.ratelimit.RateLimiter` when ``rate_limit_per_min`` is set, and with
``llm_cache`` a disk cache under the build (``llm_cache/`` for text, ``image_cache/`` for
edits, keyed by prompt hash). A role that fails raises :class:`AttemptError`; the loop records it
as a failed attempt with its reason and goes on.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from clinfuse.builders.medbanana import prompts
from clinfuse.builders.medbanana.metrics import decide, edit_metrics
from clinfuse.builders.medbanana.sources import encode_image
from clinfuse.builders.medbanana.tasks import Task
from clinfuse.llm.base import (
    GenerationConfig,
    ImagePart,
    LLMError,
    Message,
    TextBackend,
    canonical_request,
)

__all__ = [
    "AttemptError",
    "Edit",
    "Editor",
    "HistoryEntry",
    "ImageBackendEditor",
    "Judge",
    "LLMJudge",
    "LLMWriter",
    "PromptWriter",
    "Roles",
    "Verdict",
    "Written",
    "make_roles",
]


class AttemptError(Exception):
    """One role failed in one round: ``code`` is ``writer_error``, ``editor_error``,
    ``judge_error``, ``bad_json``, ``no_image``, ``bad_source`` or ``bad_mask``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Written:
    """An edit instruction and how it was obtained."""

    instruction: str
    model_id: str
    prompt_hash: str
    request: dict[str, Any] = field(default_factory=dict)
    """:func:`clinfuse.llm.base.canonical_request` of the messages (images by SHA-256)."""
    reply: str = ""


@dataclass(frozen=True)
class Edit:
    """An edited image."""

    image: Image.Image
    model_id: str
    prompt_hash: str
    seconds: float = 0.0
    text: str = ""


@dataclass(frozen=True)
class Verdict:
    """The judge's decision: rubric scores in [0, 1] (None: not given), image metrics, and
    ``qualified`` recomputed by :func:`.metrics.decide` from the configured thresholds."""

    qualified: bool
    reason_code: str
    reason: str
    compliance: float | None
    structure: float | None
    realism: float | None
    fidelity: float | None
    metrics: dict[str, float]
    model_id: str
    prompt_hash: str
    has_disease: bool | None = None
    model_reason: str = ""
    request: dict[str, Any] = field(default_factory=dict)
    reply: str = ""

    def scores(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in ("compliance", "structure", "realism", "fidelity")}


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier round as the refiner sees it."""

    round: int
    instruction: str
    qualified: bool
    reason_code: str
    reason: str
    scores: dict[str, float | None] = field(default_factory=dict)


class PromptWriter(Protocol):
    model_id: str

    def initial(self, task: Task, source: Image.Image) -> Written: ...

    def refine(
        self, task: Task, source: Image.Image, history: Sequence[HistoryEntry]
    ) -> Written: ...


class Editor(Protocol):
    """Edits ``source`` as ``instruction`` says. ``task`` and ``mask`` (the allowed region of an
    add, the lesion of a remove) are context a model editor ignores; the local editor needs
    them."""

    model_id: str

    def edit(
        self,
        source: Image.Image,
        instruction: str,
        seed: int,
        *,
        task: Task,
        mask: np.ndarray | None = None,
    ) -> Edit: ...


class Judge(Protocol):
    model_id: str

    def judge(
        self, task: Task, source: Image.Image, edited: Image.Image, allowed: np.ndarray | None
    ) -> Verdict: ...


@dataclass(frozen=True)
class Roles:
    writer: PromptWriter
    editor: Editor
    judge: Judge


def image_part(img: Image.Image) -> ImagePart:
    """A PNG :class:`ImagePart` of ``img``."""
    return ImagePart(encode_image(img, "png"), "image/png")


def _generate(backend: TextBackend, messages: list[Message], role: str) -> tuple[str, str]:
    try:
        c = backend.generate(messages, GenerationConfig(temperature=0.0, json_mode=True))
    except LLMError as exc:
        raise AttemptError(f"{role}_error", f"{role} call failed: {exc.message}") from exc
    return c.text, c.prompt_hash


class LLMWriter:
    """Prompt writer / refiner on a chat model: it sees the source image (the official code sent
    round 1 text only) and answers ``{"instruction": ...}``."""

    def __init__(self, backend: TextBackend) -> None:
        self.backend = backend
        self.model_id = backend.model_id

    def _ask(self, messages: list[Message]) -> Written:
        text, digest = _generate(self.backend, messages, "writer")
        try:
            obj = prompts.parse_json_object(text)
        except ValueError as exc:
            raise AttemptError("bad_json", f"writer reply is not valid JSON: {exc}") from exc
        instr = obj.get("instruction") or obj.get("prompt")
        if not isinstance(instr, str) or not instr.strip():
            raise AttemptError("bad_json", "writer reply has no 'instruction' string")
        req = canonical_request(messages, self.model_id)
        return Written(instr.strip(), self.model_id, digest, req, text)

    def initial(self, task: Task, source: Image.Image) -> Written:
        return self._ask(prompts.initial_messages(task, image_part(source)))

    def refine(self, task: Task, source: Image.Image, history: Sequence[HistoryEntry]) -> Written:
        return self._ask(prompts.refine_messages(task, image_part(source), history))


class LLMJudge:
    """Vision-model judge: it sees the source **and** the edit, scores the rubric; its scores
    are normalised to [0, 1] and ``qualified`` is recomputed (:func:`.metrics.decide`)."""

    def __init__(self, backend: TextBackend, cfg: Any) -> None:
        self.backend = backend
        self.cfg = cfg
        self.model_id = backend.model_id

    def judge(
        self, task: Task, source: Image.Image, edited: Image.Image, allowed: np.ndarray | None
    ) -> Verdict:
        messages = prompts.judge_messages(task, image_part(source), image_part(edited))
        text, digest = _generate(self.backend, messages, "judge")
        try:
            obj = prompts.parse_json_object(text)
        except ValueError as exc:
            raise AttemptError("bad_json", f"judge reply is not valid JSON: {exc}") from exc
        scores = prompts.normalise_scores(obj)
        metrics = edit_metrics(source, edited, allowed, self.cfg.change_tol)
        has = obj.get("has_disease")
        has = bool(has) if isinstance(has, bool | int) else None
        if has is not None and has != (task.direction == "add"):  # the finding is wrong
            scores["compliance"] = min(scores["compliance"] or 0.0, 0.0)
        reason = str(obj.get("reason", ""))
        ok, code, why = decide(
            scores, metrics, self.cfg, gates=self.cfg.metric_gates, model_reason=reason
        )
        return Verdict(
            ok,
            code,
            why,
            *scores.values(),
            metrics=metrics,
            model_id=self.model_id,
            prompt_hash=digest,
            has_disease=has,
            model_reason=reason,
            request=canonical_request(messages, self.model_id),
            reply=text,
        )


class ImageBackendEditor:
    """An editor behind ``clinfuse.llm.images.ImageEditBackend`` (``edit(image, instruction,
    seed=) -> EditedImage``); a reply without a decodable image is an :class:`AttemptError`."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.model_id = str(backend.model_id)

    def edit(
        self,
        source: Image.Image,
        instruction: str,
        seed: int,
        *,
        task: Task | None = None,
        mask: np.ndarray | None = None,
    ) -> Edit:
        t0 = time.perf_counter()
        try:
            out = self.backend.edit(image_part(source), instruction, seed=seed)
        except LLMError as exc:
            raise AttemptError("editor_error", f"editor call failed: {exc.message}") from exc
        part = getattr(out, "image", None)
        data = getattr(part, "data", None)
        if not data:
            raise AttemptError("no_image", "editor reply carries no image")
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                img = im if im.mode in ("L", "RGB") else im.convert("RGB")
        except Exception as exc:  # noqa: BLE001 - any undecodable payload
            raise AttemptError("no_image", f"editor image cannot be decoded: {exc}") from exc
        return Edit(
            img,
            str(out.model_id),
            str(out.prompt_hash),
            time.perf_counter() - t0,
            str(getattr(out, "text", "") or ""),
        )


def make_roles(cfg: Any, root: str | Path | None = None) -> Roles:
    """The writer, editor and judge named by ``cfg.writer`` / ``cfg.editor`` / ``cfg.judge``:
    ``local`` or a model spec (``gemini:<model>[@url]``, ``openai:<model>@<url>``)."""
    from clinfuse.builders.medbanana import local

    def limit() -> dict[str, Any]:
        from clinfuse.llm.ratelimit import RateLimiter

        rpm = cfg.rate_limit_per_min
        return {"rate_limiter": RateLimiter(rpm)} if rpm else {}

    def cached(backend: Any, wrapper: Any, folder: str) -> Any:
        if not cfg.llm_cache or root is None:
            return backend
        return wrapper(backend, Path(root) / folder)

    def text_backend(spec: str) -> TextBackend:
        from clinfuse.llm.base import make_backend
        from clinfuse.llm.cache import CachedBackend

        return cached(make_backend(spec, **limit()), CachedBackend, "llm_cache")

    def image_backend(spec: str) -> Any:
        from clinfuse.llm.images import CachedImageBackend, make_image_backend

        return cached(make_image_backend(spec, **limit()), CachedImageBackend, "image_cache")

    local_roles = {
        "writer": local.LocalWriter,
        "editor": local.LocalEditor,
        "judge": local.LocalJudge,
    }
    model_roles = {
        "writer": lambda spec: LLMWriter(text_backend(spec)),
        "editor": lambda spec: ImageBackendEditor(image_backend(spec)),
        "judge": lambda spec: LLMJudge(text_backend(spec), cfg),
    }
    made = {
        role: local_roles[role](cfg) if spec == "local" else model_roles[role](spec)
        for role, spec in ((r, getattr(cfg, r)) for r in ("writer", "editor", "judge"))
    }
    return Roles(**made)
