r"""DeepMedix-R1 prompt and output parsing.

The model is asked to reason inside ``<think>...</think>``, to cite image regions as
``[x_min, y_min, x_max, y_max]`` boxes in that reasoning, and to put the final answer in
``\boxed{...}``. This module holds the verbatim prompt suffix of the official
``src/xray_format.jinja`` and the parsers every other part uses:

- :func:`build_prompt`: question + the suffix, joined as the official template joins them.
- :func:`last_boxed`: the content of the last ``\boxed{...}`` with balanced braces (the
  ``mathruler.grader.extract_boxed_content`` rule the official reward uses), ``None`` if absent.
- :func:`extract_answer`: the evaluation-time answer (RadVLM's ``inference_deepmedix_r1``): the
  last boxed answer, else the text after the last ``</think>``, else ``""``.
- :func:`normalize_tags`: the official pre-processing that deletes whitespace around ``<``, ``>``
  and ``/`` (it "handles the Qwen2.5-VL-32B format").
- :func:`has_format`, :func:`parse_boxes`: the format check and the box parser of the reward.
"""

from __future__ import annotations

import re

__all__ = [
    "DEEPMEDIX_SUFFIX",
    "PROMPT_JOINER",
    "BOX_PATTERN",
    "build_prompt",
    "last_boxed",
    "extract_answer",
    "normalize_tags",
    "normalize_think_tags",
    "has_format",
    "think_text",
    "parse_boxes",
    "format_box",
]

DEEPMEDIX_SUFFIX = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the "
    "final answer. The reasoning process MUST BE enclosed within <think> </think> tags. During "
    "this reasoning process, prioritize analyzing the local regions of the image by leveraging "
    "the bounding box coordinates in the format [x_min, y_min, x_max, y_max]. The final answer "
    "MUST BE put in \\boxed{}. An example is like: <think> reasoning process 1 with [x_min1, "
    "y_min1, x_max1, y_max1]; reasoning process 2 with [x_min2, y_min2, x_max2, y_max2] "
    "</think>. The answer is: \\boxed{answer}."
)
"""The reasoning instruction appended to every question (``xray_format.jinja``, verbatim)."""

PROMPT_JOINER = "\n\n"
"""What separates the trimmed question from the suffix: the template is
``{{ content | trim }}\\n\\n<suffix>`` (RadVLM's evaluation code joins with a single ``\\n``)."""

BOX_PATTERN = re.compile(r"\[([-+]?\d*\.?\d+(?:,\s*[-+]?\d*\.?\d+){3})\]")
"""The official box regex: four signed decimals, comma-separated, spaces only after commas."""

_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TAG_SPACE = re.compile(r"\s*(<|>|/)\s*")
_BOXED = "\\boxed{"
_END_THINK = "</think>"


def build_prompt(question: str) -> str:
    r"""The user text for one question: ``question.strip() + PROMPT_JOINER + DEEPMEDIX_SUFFIX``.

    Example:
        >>> p = build_prompt("  Is there a pleural effusion? ")
        >>> p.startswith("Is there a pleural effusion?\n\nYou FIRST think")
        True
        >>> p.endswith(r"The answer is: \boxed{answer}.")
        True
    """
    return question.strip() + PROMPT_JOINER + DEEPMEDIX_SUFFIX


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}``, braces balanced, stripped; ``None`` if there is none.

    An unclosed last box gives ``None`` (mathruler returns the string ``"None"`` instead).

    Example:
        >>> last_boxed(r"\boxed{a} then \boxed{ {b} c }")
        '{b} c'
        >>> last_boxed(r"\boxed{open") is None
        True
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    body = text[start + len(_BOXED) :]
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return body[:i].strip()
    return None


def extract_answer(text: str) -> str:
    r"""The final answer: last ``\boxed{}``, else the text after the last ``</think>``, else ``""``.

    Example:
        >>> extract_answer(r"<think>[1, 2, 3, 4]</think> The answer is: \boxed{Yes}")
        'Yes'
        >>> extract_answer("<think>look</think>  No effusion. ")
        'No effusion.'
        >>> extract_answer("no tags at all")
        ''
    """
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    idx = text.rfind(_END_THINK)
    return text[idx + len(_END_THINK) :].strip() if idx >= 0 else ""


def normalize_tags(text: str) -> str:
    """Delete whitespace around ``<``, ``>`` and ``/`` (the official pre-processing).

    It also touches the answer (``"AP / PA"`` becomes ``"AP/PA"``); ``compat="fixed"`` rewards
    therefore normalise only the tags themselves (:func:`normalize_think_tags`).

    Example:
        >>> normalize_tags("< think > a / b </ think >")
        '<think>a/b</think>'
    """
    return _TAG_SPACE.sub(r"\1", text)


def normalize_think_tags(text: str) -> str:
    """Delete whitespace inside and around ``<think>`` / ``</think>`` tags only.

    Example:
        >>> normalize_think_tags("< think > a / b </ think > AP / PA")
        '<think>a / b</think>AP / PA'
    """
    return re.sub(r"\s*<\s*(/?)\s*think\s*>\s*", r"<\1think>", text)


def has_format(text: str) -> bool:
    r"""Whether ``text`` (tags normalised) fully matches ``<think>.*</think>.*\boxed{.*}.*``.

    Example:
        >>> has_format(r"<think>x</think> The answer is: \boxed{yes}")
        True
        >>> has_format(r"The answer is: \boxed{yes}")
        False
    """
    return _FORMAT.fullmatch(normalize_tags(text)) is not None


def think_text(text: str) -> str | None:
    """The first ``<think>...</think>`` block (tags normalised), or ``None``."""
    m = _THINK.search(normalize_tags(text))
    return m.group(1) if m else None


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """Every ``[x1, y1, x2, y2]`` inside the first ``<think>...</think>`` block, in order.

    Uses :data:`BOX_PATTERN`, so it finds exactly the boxes the official coordinate reward counts.

    Example:
        >>> parse_boxes("<think>heart [10, 20.5, 30, 40]; [1,2,3]</think> [5, 5, 6, 6]")
        [(10.0, 20.5, 30.0, 40.0)]
    """
    block = think_text(text)
    if block is None:
        return []
    out = []
    for m in BOX_PATTERN.finditer(block):
        x1, y1, x2, y2 = (float(v) for v in m.group(1).split(","))
        out.append((x1, y1, x2, y2))
    return out


def format_box(box: tuple[float, float, float, float] | list[float]) -> str:
    """Render a box the way the prompt shows it: ``[x1, y1, x2, y2]`` (integers when whole).

    Example:
        >>> format_box((1.0, 2.5, 3, 4))
        '[1, 2.5, 3, 4]'
    """
    return "[" + ", ".join(f"{int(v)}" if float(v).is_integer() else f"{v:g}" for v in box) + "]"
