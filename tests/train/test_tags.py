"""The trainers' DSA tags and headings come from the grader's schema (dsa_cast.schema.DSA)."""

from __future__ import annotations

from dsa_cast import parse
from dsa_cast.schema import DSA
from dsa_cast_train import data, evaluate, models


def test_tags_and_headings_are_the_schemas():
    r, a = DSA.reasoning_tag, DSA.answer_tag
    schema_tags = (f"<{r}>", f"</{r}>", f"<{a}>", f"</{a}>")
    assert schema_tags == data.DSA_TAGS
    assert (data.REASONING_START, data.REASONING_END, data.ANSWER_START, data.ANSWER_END) == data.DSA_TAGS
    assert data.DSA_TAGS == ("<reasoning>", "</reasoning>", "<answer>", "</answer>")  # what Gemma was trained on
    schema_headings = tuple(f"{s}:" for s in DSA.sections)
    assert schema_headings == data.SECTION_HEADINGS
    assert models.DSA_TAGS is data.DSA_TAGS
    assert (models.START_OF_TURN, models.END_OF_TURN) == (data.START_OF_TURN, data.END_OF_TURN)


def test_prefill_is_put_back_for_grading():
    prompt = data.build_prompt("What is 2+3?", prefill=True)
    assert prompt.endswith(data.PREFILL) and data.PREFILL == data.REASONING_START + "\n"
    continuation = ("Plan:\n1. add\nReasoning:\n2+3\nEvidence:\nCALC: 2+3 = 5\nSanity_check:\nok\n"
                    "</reasoning>\n<answer>\n5\n</answer>")
    completion = evaluate.completion_for_grading(continuation, prefill=True)
    assert completion.startswith(data.PREFILL)
    parsed = parse.parse(completion)
    assert parsed.answer.body.strip() == "5" and not parsed.issues
    assert evaluate.completion_for_grading(continuation, prefill=False) == continuation


def test_rendered_response_parses_with_the_schema():
    response = data.render_response("1. add", "2+3", "CALC: 2+3 = 5", "5 is the sum", "5")
    assert not parse.parse(response).issues
