"""Trailing stop markers (``<end_of_turn>``, ``<|im_end|>``, ...) stripped before grading."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast.markers import END_MARKERS, check_end_markers, strip_end_markers
from dsa_cast.score import grade

GOOD = (
    "<reasoning>\nPlan:\nMultiply the boxes by the apples per box.\n"
    "Reasoning:\n6 boxes of 7 apples each make 6 times 7 = 42 apples.\n"
    "Evidence:\nCALC: 6*7 = 42\n"
    "Sanity_check:\n42 apples shared by 7 per box gives 6 boxes.\n</reasoning>\n<answer>42</answer>"
)

tails = st.lists(
    st.tuples(st.sampled_from(END_MARKERS), st.sampled_from(["", "\n", " ", "\n\n"])), min_size=1, max_size=4
)


@pytest.mark.parametrize(
    "tail",
    [
        "<end_of_turn>",
        "<end_of_turn>\n",
        "<end_of_turn><eos>",
        "\n<|im_end|>",
        "<|im_end|>\n<|endoftext|>",
        "</s>",
        "<|eot_id|>",
    ],
)
def test_a_normally_ended_completion_scores_the_maximum(tail):
    assert grade(GOOD + tail, "42").total == 9.5  # the rubric itself counts the marker as text
    assert strip_end_markers(GOOD + tail) == GOOD
    assert grade(strip_end_markers(GOOD + tail), "42").total == 10.0


@given(body=st.text(max_size=60), tail=tails)
def test_property_strips_exactly_a_trailing_run(body, tail):
    text = body + "".join(m + ws for m, ws in tail)
    out = strip_end_markers(text)
    assert text.startswith(out)
    assert strip_end_markers(out) == out  # idempotent
    assert not any(out.rstrip().endswith(m) for m in END_MARKERS)
    # only markers and whitespace were removed
    rest = text[len(out) :]
    for m in END_MARKERS:
        rest = rest.replace(m, "")
    assert rest.strip() == ""


@given(st.text(max_size=80))
def test_property_text_without_a_trailing_marker_is_unchanged(text):
    if not any(text.rstrip().endswith(m) for m in END_MARKERS):
        assert strip_end_markers(text) is text


def test_markers_elsewhere_are_kept():
    mid = "<end_of_turn>" + GOOD
    assert strip_end_markers(mid) == mid
    assert strip_end_markers(GOOD + "<end_of_turn> trailing words") == GOOD + "<end_of_turn> trailing words"


def test_configurable_and_off():
    assert strip_end_markers(GOOD + "<END>", ("<END>",)) == GOOD
    assert strip_end_markers(GOOD + "<end_of_turn>", ("<END>",)) == GOOD + "<end_of_turn>"
    assert strip_end_markers(GOOD + "<end_of_turn>", ()) == GOOD + "<end_of_turn>"


def test_long_run_is_linear():
    text = GOOD + "<eos>" * 100_000
    assert strip_end_markers(text) == GOOD


def test_check_end_markers():
    assert check_end_markers(["<a>", "<b>"]) == ("<a>", "<b>")
    with pytest.raises(TypeError, match="one str"):
        check_end_markers("<end_of_turn>")
    with pytest.raises(ValueError, match=r"end_markers\[1\]"):
        check_end_markers(["<a>", ""])
    with pytest.raises(ValueError, match=r"end_markers\[0\]"):
        check_end_markers([3])
    with pytest.raises(TypeError):
        check_end_markers(5)
