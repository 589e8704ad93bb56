"""The ``dsa-cast`` and ``format`` rubrics, the Grade contract and the public API.

Most checks are hypothesis properties over generated DSA completions (sections drawn from
realistic, boilerplate, copied and empty bodies; true, false, trivial and ungrounded claims;
right, wrong and malformed answers): the invariants listed in docs/rewards.md.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dsa_cast.rubrics import (
    RUBRICS,
    DsaCastRubric,
    DsaCastWeights,
    FormatRubric,
    Grade,
    get_rubric,
    resolve_rubric,
)
from dsa_cast.score import explain, grade, grade_batch

SECTIONS = ("Plan", "Reasoning", "Evidence", "Sanity_check")
DSA_CAST = RUBRICS["dsa-cast"]
SKELETON_SHARE = 0.05  # documented in docs/rewards.md: a skeleton earns <= 5 % besides correctness


def render(sections, answer="", *, gap="\n"):
    """A DSA completion from ``[(name, body), ...]`` and the answer-block body."""
    inner = gap.join(f"{name}:{gap}{body}" for name, body in sections)
    return f"<reasoning>{gap}{inner}{gap}</reasoning>{gap}<answer>{answer}</answer>"


@dataclasses.dataclass(frozen=True)
class Case:
    sections: tuple[tuple[str, str], ...]
    answer: str
    ref: int
    question: str | None

    @property
    def text(self):
        return render(self.sections, self.answer)

    def grade(self, rubric=DSA_CAST, **changes):
        c = dataclasses.replace(self, **changes)
        return grade(c.text, c.ref, rubric=rubric, question=c.question)


@st.composite
def cases(draw, answer_kind=None):
    a, b = draw(st.integers(2, 60)), draw(st.integers(2, 60))
    ref = a * b
    question = f"Tom has {a} boxes with {b} pens in each box. How many pens does Tom have?"
    plan = draw(
        st.sampled_from(
            [
                "Multiply the number of boxes by the pens per box.",
                "Solve the problem step by step.",
                question,
                "",
                "ok",
                "Count every pen: boxes times pens in each.",
            ]
        )
    )
    reasoning = draw(
        st.sampled_from(
            [
                f"He has {a} boxes of {b} pens, so {a} * {b} = {ref} pens.",
                f"So the total is {ref} pens.",
                f"Boxes {a} and pens {b} multiply to a total.",
                "",
                "ok",
                question,
            ]
        )
    )
    claims = draw(
        st.lists(
            st.sampled_from(
                [
                    f"CALC: {a} * {b} = {ref}",
                    f"CALC: {a} * {b} = {ref + 1}",
                    "CALC: 1 + 1 = 2",
                    f"CALC: {a} * 1 = {a}",
                    "CALC: 123 + 456 = 579",
                    f"{a} x {b} = {ref}",
                    f"<<{b}*{a}={ref}>>",
                    "Multiplication is correct.",
                    "CALC: (2 = 3",
                    f"CALC: {ref} / {b} = {a}",
                ]
            ),
            max_size=5,
        )
    )
    sanity = draw(
        st.sampled_from(
            [
                f"{ref} is more than {a}, as expected for {b} pens per box.",
                "The answer is reasonable.",
                "",
                f"Dividing {ref} by {a} gives back {b}.",
                "Looks good.",
            ]
        )
    )
    bodies = {"Plan": plan, "Reasoning": reasoning, "Evidence": "\n".join(claims), "Sanity_check": sanity}
    names = list(SECTIONS)
    if draw(st.booleans()):
        names = draw(st.permutations(SECTIONS))
    keep = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    if draw(st.integers(0, 3)) > 0:
        keep = [True] * 4
    sections = tuple((n, bodies[n]) for n, k in zip(names, keep, strict=True) if k)
    kind = answer_kind or draw(st.sampled_from(["right", "wrong", "styled", "several", "empty"]))
    answer = {
        "right": str(ref),
        "wrong": str(ref + draw(st.integers(1, 9))),
        "styled": draw(st.sampled_from([f"${ref:,}.00", f"\\boxed{{{ref}}}", f"The answer is {ref}."])),
        "several": f"{ref} or {ref + 1}",
        "empty": " ",
    }[kind]
    return Case(sections, answer, ref, question if draw(st.booleans()) else None)


PROPS = settings(suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------
# Grade contract.
# --------------------------------------------------------------------------------------


def check_grade(g: Grade, rubric) -> None:
    assert isinstance(g.total, float) and math.isfinite(g.total)
    assert rubric.min_total <= g.total <= rubric.max_total
    assert tuple(g.components) == rubric.components
    assert sum(g.components.values()) == g.total  # exactly, in component order
    assert g.max_total == rubric.max_total
    assert all(type(i) is str for i in g.issues) and len(set(g.issues)) == len(g.issues)


@PROPS
@given(cases(), st.sampled_from(sorted(RUBRICS)))
def test_grade_contract_on_generated_completions(case, name):
    rubric = RUBRICS[name]
    g = case.grade(rubric)
    check_grade(g, rubric)
    assert g == case.grade(rubric)  # deterministic


@given(st.text(), st.sampled_from(sorted(RUBRICS)), st.sampled_from([None, "42", 7, Fraction(1, 3), "#### 1,234"]))
def test_any_text_never_raises(text, name, ref):
    check_grade(grade(text, ref, rubric=name), RUBRICS[name])


TAGGY = st.lists(
    st.sampled_from(
        [
            "<reasoning>",
            "</reasoning>",
            "<answer>",
            "</answer>",
            "Plan:",
            "Reasoning:",
            "Evidence:",
            "Sanity_check:",
            "\n",
            " ",
            "42",
            "CALC: 6*7 = 42",
            "x",
            "\\boxed{",
            "}",
            "<<2*3=6>>",
        ]
    ),
    max_size=30,
).map("".join)


@given(TAGGY, st.sampled_from(sorted(RUBRICS)))
def test_tag_soup_never_raises(text, name):
    g = grade(text, "42", rubric=name, question="What is 6 times 7?")
    check_grade(g, RUBRICS[name])


def test_grade_is_frozen_and_components_read_only():
    g = grade(render([(s, "text here now") for s in SECTIONS], "1"), "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.total = 0.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        g.components["format"] = 5.0  # type: ignore[index]
    assert hash(g) == hash(grade(render([(s, "text here now") for s in SECTIONS], "1"), "1"))


def test_non_str_inputs_raise_type_error_naming_the_position():
    with pytest.raises(TypeError, match="completion must be str, got bytes"):
        grade(b"<answer>1</answer>")
    with pytest.raises(TypeError, match="completion must be str, got NoneType"):
        grade(None)
    with pytest.raises(TypeError, match=r"completions\[2\] must be str, got int"):
        grade_batch(["a", "b", 3], ["1", "2", "3"])
    with pytest.raises(TypeError, match="got one str"):
        grade_batch("abc", None)
    with pytest.raises(TypeError, match="question must be str"):
        grade("x", question=5)
    with pytest.raises(TypeError, match=r"questions\[1\]"):
        grade_batch(["a", "b"], None, questions=["q", 1])
    with pytest.raises(ValueError, match=r"answers\[1\]: answer 'many' has no single numeric value"):
        grade_batch(["a", "b"], ["1", "many"])
    with pytest.raises(TypeError, match=r"answers\[0\]"):
        grade_batch(["a"], [True])
    with pytest.raises(ValueError, match="2 entries for 1"):
        grade_batch(["a"], ["1", "2"])


def test_grade_batch_matches_grade():
    texts = [render([(s, "words and more") for s in SECTIONS], str(i)) for i in range(5)]
    refs = ["1", 2, None, Fraction(3), "#### 4"]
    qs = ["q one", None, "q three", None, None]
    assert grade_batch(texts, refs, questions=qs) == [
        grade(t, r, question=q) for t, r, q in zip(texts, refs, qs, strict=True)
    ]
    assert grade_batch(texts, None, rubric="seed") == [grade(t, rubric="seed") for t in texts]
    assert grade_batch([], None) == []


def test_registry_and_options():
    assert set(RUBRICS) == {"dsa-cast", "seed", "format"}
    assert resolve_rubric("seed") is RUBRICS["seed"] and get_rubric() is RUBRICS["dsa-cast"]
    r = get_rubric("dsa-cast", partial_credit=True, percent="number", weights={"format": 2.0})
    assert isinstance(r, DsaCastRubric) and r.partial_credit and r.weights.format == 2.0
    assert r.max_total == 11.0 and resolve_rubric(r) is r
    with pytest.raises(ValueError, match="unknown rubric 'nope'"):
        get_rubric("nope")
    with pytest.raises(ValueError, match="no option 'partial'"):
        get_rubric("dsa-cast", partial=True)
    with pytest.raises(ValueError, match="unknown rubric"):
        grade("x", rubric="nope")
    with pytest.raises(TypeError, match="rubric must be"):
        grade("x", rubric=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="percent"):
        DsaCastRubric(percent="sometimes")
    with pytest.raises(ValueError, match="must not exceed malformed_share"):
        DsaCastRubric(near_share=0.6, malformed_share=0.5)
    with pytest.raises(ValueError, match="must exceed weights.coherence"):
        DsaCastRubric(weights=DsaCastWeights(correctness=1.0, coherence=1.0))
    with pytest.raises(ValueError, match="evidence_section"):
        DsaCastRubric(evidence_section="Proof")
    with pytest.raises(ValueError, match="weight"):
        FormatRubric(weight=-1.0)
    assert DsaCastWeights().total == 10.0
    w = DsaCastWeights()
    assert w.correctness >= (w.total - w.correctness)  # correctness dominates


def test_import_stays_light():
    code = (
        "import sys, dsa_cast, dsa_cast.score\n"
        "heavy = [m for m in ('numpy', 'jax', 'jaxlib', 'flax', 'tunix') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --------------------------------------------------------------------------------------
# dsa-cast components.
# --------------------------------------------------------------------------------------

QUESTION = "A shop sells 16 boxes of 12 pens. It gives away 4 boxes. How many pens are left?"
CLEAN = (
    ("Plan", "Find the boxes kept, then multiply by the pens in each box."),
    ("Reasoning", "The shop keeps 16 - 4 = 12 boxes, and 12 * 12 = 144 pens remain."),
    ("Evidence", "CALC: 16 - 4 = 12\nCALC: 12 * 12 = 144"),
    ("Sanity_check", "144 is less than all 16 * 12 = 192 pens, as it must be."),
)


def g_clean(sections=CLEAN, answer="144", question=QUESTION, rubric=DSA_CAST, ref="144"):
    return grade(render(sections, answer), ref, rubric=rubric, question=question)


def replace(sections, name, body):
    return tuple((n, body if n == name else b) for n, b in sections)


def test_clean_completion_earns_the_maximum():
    g = g_clean()
    assert g.total == 10.0 and g.correct is True and g.predicted == "144" and g.issues == ()
    assert dict(g.components) == {
        "format": 1.0,
        "structure": 1.5,
        "correctness": 5.0,
        "evidence": 1.5,
        "coherence": 1.0,
    }
    assert g_clean(question=None).total == 10.0  # grounding falls back to Plan + Reasoning


def test_structure_rejects_boilerplate_and_copies():
    g = g_clean(replace(CLEAN, "Plan", "Solve the problem step by step."))
    assert g.components["structure"] == 1.5 * 3 / 4 and "boilerplate_section" in g.issues
    g = g_clean(replace(CLEAN, "Plan", "N/A"))
    assert g.components["structure"] == 1.5 * 3 / 4 and "boilerplate_section" in g.issues
    g = g_clean(replace(CLEAN, "Plan", QUESTION))
    assert g.components["structure"] == 1.5 * 3 / 4 and "copied_question" in g.issues
    assert g_clean(replace(CLEAN, "Plan", QUESTION), question=None).components["structure"] == 1.5
    order = (CLEAN[1], CLEAN[0], CLEAN[2], CLEAN[3])
    g = g_clean(order)
    assert g.components["structure"] == 1.5 * 0.5 and "section_out_of_order" in g.issues
    assert g.components["evidence"] == 0.0 and g.components["coherence"] == 0.0  # unsound
    g = g_clean(CLEAN + (("Plan", "Another plan with words."),))
    assert g.components["structure"] == 0.0 and "duplicate_section" in g.issues


def test_evidence_counts_distinct_grounded_true_claims():
    def ev(body):
        return g_clean(replace(CLEAN, "Evidence", body))

    assert ev("CALC: 16 - 4 = 12\nCALC: 12 * 12 = 145").components["evidence"] == 1.5 / 2
    assert ev("The numbers are right.").components["evidence"] == 0.0
    assert "no_claims" in ev("The numbers are right.").issues
    false_only = ev("CALC: 12 * 12 = 145")
    assert false_only.components["evidence"] == 0.0 and "false_claim" in false_only.issues
    # spamming trivial or off-problem true claims never raises the share
    spam = ev("CALC: 12 * 12 = 145\n" + "CALC: 1 + 1 = 2\n" * 50 + "CALC: 16 * 1 = 16\n")
    assert spam.components["evidence"] == 0.0 and "trivial_claim" in spam.issues
    off = ev("CALC: 12 * 12 = 145\nCALC: 123 + 456 = 579\nCALC: 77 * 3 = 231")
    assert off.components["evidence"] == 0.0 and "ungrounded_claim" in off.issues
    half = ev("CALC: 16 - 4 = 12\nCALC: 12 * 12 = 145")
    for filler in (
        "CALC: 1 + 1 = 2\n" * 40,
        "".join(f"CALC: {k} * 1 = {k}\n" for k in range(2, 40)),
        "".join(f"CALC: {k} + {k} = {2 * k}\n" for k in range(100, 140)),
    ):
        farmed = ev("CALC: 16 - 4 = 12\nCALC: 12 * 12 = 145\n" + filler)
        assert farmed.components["evidence"] <= half.components["evidence"]
    # repeating one true claim counts it once
    assert ev("CALC: 16 - 4 = 12\n" * 30 + "CALC: 12 * 12 = 145").components["evidence"] == 1.5 / 2
    # a chain through a grounded result is grounded
    assert ev("CALC: 16 - 4 = 12\nCALC: 12 * 12 = 144").components["evidence"] == 1.5
    # uncheckable claims count against the share
    g = ev("CALC: 16 - 4 = 12\nCALC: (12 * = 3")
    assert g.components["evidence"] == 1.5 / 2 and "uncheckable_claim" in g.issues


def test_coherence_needs_support_and_a_sanity_reference():
    g = g_clean(replace(CLEAN, "Sanity_check", "The value is plausible for a small shop."))
    assert g.components["coherence"] == 0.5 and "sanity_ignores_answer" in g.issues
    no_support = replace(
        replace(CLEAN, "Reasoning", "The shop keeps twelve boxes of pens."), "Evidence", "CALC: 16 - 4 = 12"
    )
    g = g_clean(no_support)
    assert g.components["coherence"] == 0.5 and "unsupported_answer" in g.issues
    # the answer as a checked-true claim's result is support enough
    g = g_clean(replace(CLEAN, "Reasoning", "The shop keeps twelve boxes of twelve pens."))
    assert g.components["coherence"] == 1.0
    # a wrong answer that the monologue never mentions loses coherence too
    g = g_clean(answer="150")
    assert g.components["coherence"] == 0.0 and g.correct is False


def test_correctness_and_partial_credit_option():
    assert g_clean(answer="$144.00").correct is True
    assert g_clean(answer="144 or 145").correct is False
    assert "multiple_candidates" in g_clean(answer="144 or 145").issues
    second = render(CLEAN, "144") + "\n<answer>144</answer>"
    g = grade(second, "144", question=QUESTION)
    assert g.correct is False and g.components["correctness"] == 0.0
    unclosed = render(CLEAN, "144")[: -len("</answer>")]
    assert grade(unclosed, "144").correct is False
    partial = get_rubric("dsa-cast", partial_credit=True)
    near = g_clean(answer="150", rubric=partial)  # |150-144| <= 14.4
    far = g_clean(answer="170", rubric=partial)
    malformed = grade(second, "144", rubric=partial, question=QUESTION)
    assert near.components["correctness"] == 5.0 * 0.25 and far.components["correctness"] == 0.0
    assert malformed.components["correctness"] == 5.0 * 0.5
    assert near.components["correctness"] <= malformed.components["correctness"]
    assert g_clean(answer="150").components["correctness"] == 0.0  # off by default
    percent = grade(render(CLEAN, "25%"), "25")
    assert percent.correct is True
    assert grade(render(CLEAN, "25%"), "25", rubric=get_rubric("dsa-cast", percent="fraction")).correct is False
    assert g_clean(ref=None).correct is None and g_clean(ref=None).components["correctness"] == 0.0


def test_explain_returns_detail():
    g = explain(render(CLEAN, "144"), "144", question=QUESTION)
    assert g.detail is not None and g.detail.parsed is not None
    assert g.detail.extraction.value == 144 and g.detail.reference == 144
    assert len(g.detail.verdicts) == 2 and all(v.ok for v in g.detail.verdicts)
    assert g.detail.scores["claims_credited"] == 2 and g.detail.scores["sound"] == 1.0
    assert g == grade(render(CLEAN, "144"), "144", question=QUESTION)  # detail is not compared
    assert grade(render(CLEAN, "144")).detail is None
    assert explain("junk", rubric="format").detail.scores["format"] == 0.0


def test_think_schema():
    from dsa_cast.schema import THINK

    think = get_rubric("dsa-cast", schema=THINK)
    text = render(CLEAN, "144").replace("reasoning>", "think>")
    assert grade(text, "144", rubric=think, question=QUESTION).total == 10.0
    assert grade(text, "144", question=QUESTION).components["format"] == 0.0


# --------------------------------------------------------------------------------------
# Invariants (properties).
# --------------------------------------------------------------------------------------

MONOTONE = ("dsa-cast", "format")


@PROPS
@given(cases(), st.one_of(st.text(max_size=60), TAGGY), st.sampled_from(MONOTONE))
def test_appending_after_the_answer_block_never_raises(case, suffix, name):
    base = case.grade(RUBRICS[name])
    g = grade(case.text + suffix, case.ref, rubric=name, question=case.question)
    assert g.total <= base.total


@PROPS
@given(cases(), st.sampled_from(["144", "", "1 2 3", "{ref}"]), st.booleans(), st.sampled_from(MONOTONE))
def test_a_second_answer_block_never_raises(case, body, before, name):
    block = f"<answer>{body.format(ref=case.ref)}</answer>"
    text = block + "\n" + case.text if before else case.text + "\n" + block
    g = grade(text, case.ref, rubric=name, question=case.question)
    assert g.total <= case.grade(RUBRICS[name]).total


@PROPS
@given(cases(), st.data(), st.sampled_from(MONOTONE))
def test_adding_an_empty_heading_never_raises(case, data, name):
    at = data.draw(st.integers(0, len(case.sections)))
    heading = data.draw(st.sampled_from(SECTIONS))
    sections = case.sections[:at] + ((heading, ""),) + case.sections[at:]
    base = case.grade(RUBRICS[name]).total
    assert case.grade(RUBRICS[name], sections=sections).total <= base


@PROPS
@given(cases(), st.data(), st.sampled_from(MONOTONE))
def test_repeating_a_heading_never_raises(case, data, name):
    assume(case.sections)
    i = data.draw(st.integers(0, len(case.sections) - 1))
    heading = data.draw(st.sampled_from([n for n, _ in case.sections]))
    own, body = case.sections[i]
    lines = body.split("\n")
    k = data.draw(st.integers(0, len(lines)))
    split = ((own, "\n".join(lines[:k])), (heading, "\n".join(lines[k:])))
    sections = case.sections[:i] + split + case.sections[i + 1 :]
    base = case.grade(RUBRICS[name]).total
    assert case.grade(RUBRICS[name], sections=sections).total <= base


@PROPS
@given(cases(), st.data(), st.sampled_from(["repeat", "space"]), st.sampled_from(MONOTONE))
def test_padding_a_section_never_raises(case, data, how, name):
    assume(case.sections)
    i = data.draw(st.integers(0, len(case.sections) - 1))
    own, body = case.sections[i]
    if how == "repeat":
        padded = "\n".join([body] * data.draw(st.integers(2, 5)))
    else:
        pad = data.draw(st.text(alphabet=" \t\n", min_size=1, max_size=8))
        padded = pad + body.replace("\n", "\n" + pad) + pad
    sections = case.sections[:i] + ((own, padded),) + case.sections[i + 1 :]
    base = case.grade(RUBRICS[name]).total
    assert case.grade(RUBRICS[name], sections=sections).total <= base


@PROPS
@given(cases(answer_kind="right"), st.integers(1, 10_000), st.booleans())
def test_a_wrong_answer_never_beats_the_right_one(case, delta, partial):
    rubric = get_rubric("dsa-cast", partial_credit=partial)
    right = case.grade(rubric)
    wrong = case.grade(rubric, answer=str(case.ref + delta))
    assert wrong.total <= right.total
    if right.correct:
        assert wrong.total < right.total


@PROPS
@given(
    st.sampled_from(["", " ", "\n", " \n\t"]),
    st.sampled_from(["", "42", "7", "$42", "x"]),
    st.booleans(),
    st.sampled_from([None, "What is 6 times 7?"]),
)
def test_a_skeleton_earns_a_small_share(gap_body, answer, think, question):
    text = render([(s, gap_body) for s in SECTIONS], answer)
    rubric = get_rubric("dsa-cast")
    g = grade(text, "42", rubric=rubric, question=question)
    assert g.total - g.components["correctness"] <= SKELETON_SHARE * g.max_total
    if not g.correct:
        assert g.total <= SKELETON_SHARE * g.max_total


def test_number_words_in_the_question_ground_claims():
    q = "Janet's ducks lay 16 eggs. She eats three and bakes with four. How many are left?"
    sections = (
        ("Plan", "Subtract what she eats and bakes from the eggs laid."),
        ("Reasoning", "She uses 3 + 4 = 7 eggs, so 16 - 7 = 9 are left."),
        ("Evidence", "CALC: 3 + 4 = 7\nCALC: 16 - 7 = 9"),
        ("Sanity_check", "9 is less than 16."),
    )
    g = grade(render(sections, "9"), "9", question=q)
    assert g.components["evidence"] == 1.5 and g.issues == ()
    g = grade(render(sections, "9"), "9", question=q.replace("three", "some").replace("four", "more"))
    assert g.components["evidence"] == 1.5 / 2 and "ungrounded_claim" in g.issues


def test_only_credited_claims_support_the_answer():
    sections = replace(
        replace(CLEAN, "Reasoning", "The shop keeps twelve boxes of twelve pens."),
        "Evidence",
        "CALC: 144 * 1 = 144\nCALC: 16 - 4 = 12",
    )
    g = g_clean(sections)
    assert "trivial_claim" in g.issues and "unsupported_answer" in g.issues
    assert g.components["coherence"] == 0.5


@pytest.mark.parametrize("name", sorted(RUBRICS))
def test_grades_pickle(name):
    import pickle

    for detail in (False, True):
        g = grade(render(CLEAN, "144"), "144", rubric=name, question=QUESTION, detail=detail)
        back = pickle.loads(pickle.dumps(g))
        assert back == g and type(back.components) is type(g.components)
        assert (back.detail is None) == (not detail)


NUMBERISH = st.lists(
    st.sampled_from(
        list("0123456789")
        + [
            "-",
            "\u2212",
            "+",
            ".",
            ",",
            " ",
            "/",
            "%",
            "e",
            "x",
            "a",
            "$",
            "(",
            ")",
            "\\frac{1}{2}",
            "{,}",
            "\u00a0",
            "^",
            "×",
            "percent",
            "\n",
            "=",
            "*",
        ]
    ),
    max_size=14,
).map("".join)


@given(
    NUMBERISH,
    st.sampled_from(
        [
            0,
            1,
            2,
            5,
            12,
            25,
            125,
            1000,
            1025,
            1234567,
            Fraction(1, 2),
            Fraction(5, 2),
            -5,
            -1,
            Fraction(1, 4),
            Fraction(-1, 2),
        ]
    ),
    st.booleans(),
)
def test_answer_mentions_follow_the_documented_reading(body, target, percent):
    """Integers >= 0: plain digits, maybe comma-grouped, not negative, not part of a longer number
    (checked against a regular-expression statement of that rule); others: numbers_in."""
    import re

    from dsa_cast.numbers import numbers_in

    targets = (Fraction(target), Fraction(target) * 100) if percent else (Fraction(target),)
    expected = False
    for t in targets:
        if t.denominator == 1 and t >= 0:
            forms = "|".join(re.escape(f) for f in {str(t.numerator), f"{t.numerator:,}"})
            rule = (
                rf"(?<![0-9.])(?<![0-9],)(?<!(?<![0-9A-Za-z)\]}}])[-\u2212])(?:{forms})"
                r"(?:\.0+)?(?![0-9]|,[0-9]{3}|\.[0-9])"
            )
            expected = expected or re.search(rule, body) is not None
        else:
            expected = expected or any(v == t for v, _, _ in numbers_in(body))
    assert DsaCastRubric._mentions(body, targets) == expected


# ----------------------------------------------------------------------------- _mentions_int
def _mentions_loop(body: str, s: str) -> bool:
    """The rule of rubrics._mentions_int for one spelling ``s``, occurrence by occurrence."""
    from dsa_cast.rubrics import _DIGITS, _INT_END, _OPERATOR_LEFT

    k = body.find(s)
    while k >= 0:
        c = body[k - 1] if k else " "
        ok = c not in _DIGITS and c != "." and not (c == "," and k >= 2 and body[k - 2] in _DIGITS)
        if ok and c in "-\u2212":
            ok = k >= 2 and body[k - 2] in _OPERATOR_LEFT
        if ok and _INT_END.match(body, k + len(s)) is not None:
            return True
        k = body.find(s, k + 1)
    return False


_MENTION_PIECES = [
    "1",
    "1",
    "1",
    "0",
    "2",
    "9",
    ".",
    ",",
    "-",
    "\u2212",
    "x",
    "X",
    "A",
    "Z",
    "z",
    ")",
    "]",
    "}",
    "(",
    " ",
    "1,000",
    ".0",
    "1.",
    "12",
    "a-",
    "_",
    "\u0661",
]


_MENTION_EDGES = [
    "9,1",
    "Z-1",
    "z-1",
    "]-1",
    "}-1",
    ")-1",
    "(-1",
    "-1",
    " -1",
    "1-1",
    "x\u22121",
    "\u22121",
    "1.1",
    "1,000",
    "2,1,000",
    "1.0",
    "1.05",
    "1,0001",
    "1.",
    ".1",
    "11",
    "1,",
    "1,00",
]


@given(
    st.lists(st.sampled_from(_MENTION_PIECES + _MENTION_EDGES), max_size=60),
    st.sampled_from([0, 1, 2, 10, 12, 1000, 1001]),
)
def test_mention_pattern_is_the_occurrence_rule(pieces, t):
    from dsa_cast.rubrics import _mention_pattern

    body = "".join(pieces)
    for edge in _MENTION_EDGES:  # every edge alone too, for both spellings of 1 and 1000
        for s in ("1", "1,000", "1000"):
            assert (_mention_pattern(s).search(edge) is not None) == _mentions_loop(edge, s), (edge, s)
    for s in {str(t), f"{t:,}"}:
        assert (_mention_pattern(s).search(body) is not None) == _mentions_loop(body, s)


@given(st.lists(st.sampled_from(_MENTION_PIECES), max_size=300), st.sampled_from([0, 1, 2, 10, 1000]))
def test_mentions_int_matches_the_occurrence_rule(pieces, t):
    from dsa_cast.rubrics import _mentions_int

    body = "".join(pieces)
    assert _mentions_int(body, t) == any(_mentions_loop(body, s) for s in {str(t), f"{t:,}"})


def test_mentions_int_is_fast_on_a_90000_digit_run():
    from dsa_cast.rubrics import _mentions_int

    body = "1" * 90_000
    assert _mentions_int(body, 1) is False and _mentions_int(body + " 1", 1) is True
    assert _mentions_int("1." * 50_000, 1) is False and _mentions_int("1." * 50_000 + " 1", 1) is True


def test_grade_init_takes_exactly_the_dataclass_fields() -> None:
    """Grade writes its __init__ out (one __dict__ update, for speed): it must stay in step with the fields."""
    import dataclasses
    import inspect

    from dsa_cast.rubrics import Grade

    fields = [(f.name, f.default) for f in dataclasses.fields(Grade)]
    params = [(p.name, p.default) for p in list(inspect.signature(Grade.__init__).parameters.values())[1:]]
    assert params == [(n, inspect.Parameter.empty if d is dataclasses.MISSING else d) for n, d in fields]
