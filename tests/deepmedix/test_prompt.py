"""DeepMedix prompt and parsers: the verbatim suffix, answer extraction, box parsing, format."""

from __future__ import annotations

import pytest

from clinfuse.methods.deepmedix.prompt import (
    DEEPMEDIX_SUFFIX,
    build_prompt,
    extract_answer,
    format_box,
    has_format,
    last_boxed,
    normalize_tags,
    parse_boxes,
)

# xray_format.jinja of DeepReasoning/DeepMedix-R1 (after "{{ content | trim }}\n\n"), verbatim.
OFFICIAL_SUFFIX = (
    r"You FIRST think about the reasoning process as an internal monologue and then provide the "
    r"final answer. The reasoning process MUST BE enclosed within <think> </think> tags. During "
    r"this reasoning process, prioritize analyzing the local regions of the image by leveraging "
    r"the bounding box coordinates in the format [x_min, y_min, x_max, y_max]. The final answer "
    r"MUST BE put in \boxed{}. An example is like: <think> reasoning process 1 with [x_min1, "
    r"y_min1, x_max1, y_max1]; reasoning process 2 with [x_min2, y_min2, x_max2, y_max2] "
    r"</think>. The answer is: \boxed{answer}."
)


def test_suffix_is_verbatim_and_single_backslash():
    assert DEEPMEDIX_SUFFIX == OFFICIAL_SUFFIX
    assert DEEPMEDIX_SUFFIX.count("\\boxed{") == 2 and "\\\\" not in DEEPMEDIX_SUFFIX


def test_build_prompt_trims_and_joins_like_the_template():
    assert build_prompt("  What is the view?\n") == "What is the view?\n\n" + OFFICIAL_SUFFIX


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"<think>x</think> The answer is: \boxed{PA}", "PA"),
        (r"\boxed{first} and later \boxed{second}", "second"),  # the last box wins
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # balanced braces
        (r"<think>a</think> \boxed{ spaced answer }", "spaced answer"),
        ("<think>reasoning</think>\n  Left pleural effusion. ", "Left pleural effusion."),
        ("<think>one</think> x </think> after the last", "after the last"),
        (r"<think>a</think> \boxed{unclosed", r"\boxed{unclosed"),  # no complete box
        ("plain text without tags", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_none_cases():
    assert last_boxed("nothing") is None
    assert last_boxed(r"\boxed{a{b}") is None
    assert last_boxed(r"\boxed{}") == ""


def test_parse_boxes_follows_the_official_regex():
    text = (
        "<think>right lung [10, 20, 200.5, 300]; mass [-5,+6,7.25,.5]; "
        "not a box [1, 2, 3]; spaced [1 , 2, 3, 4]</think> [9, 9, 9, 9] \\boxed{x}"
    )
    assert parse_boxes(text) == [(10.0, 20.0, 200.5, 300.0), (-5.0, 6.0, 7.25, 0.5)]
    assert parse_boxes("[1, 2, 3, 4] no think block") == []
    # only the first <think> block counts; spaces inside tags are normalised first
    assert parse_boxes("< think >[1, 2, 3, 4]</ think ><think>[5, 6, 7, 8]</think>") == [
        (1.0, 2.0, 3.0, 4.0)
    ]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        (r"<think>r</think> The answer is: \boxed{yes}", True),
        (r"< think > r </ think > \boxed{yes} trailing", True),
        ("<think>\nmulti\nline\n</think>\n\\boxed{a\nb}", True),
        (r"<think>r</think> The answer is yes", False),
        (r"\boxed{yes} <think>r</think>", False),
        (r"<think>r \boxed{yes}", False),
        ("", False),
    ],
)
def test_has_format(text, ok):
    assert has_format(text) is ok


def test_normalize_tags_and_format_box():
    assert normalize_tags("a / b < c >") == "a/b<c>"
    assert format_box((0.0, 12.0, 100.5, 512)) == "[0, 12, 100.5, 512]"
    assert parse_boxes(f"<think>{format_box((0.0, 12.0, 100.5, 512))}</think>") == [
        (0.0, 12.0, 100.5, 512.0)
    ]


def test_docstring_examples():
    import doctest

    from clinfuse.methods.deepmedix import prompt as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
