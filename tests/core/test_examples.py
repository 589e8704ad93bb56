"""A table of realistic completions (formats, hacks, truncations) with the expected outcome.

Each row states what a careful human grader would say: whether the final answer is correct and
which issue codes explain the grade (exactly, in the order ``Grade.issues`` lists them: parse
codes, then the answer-extraction issue, then rubric codes). Most rows use one GSM8K-style
problem (answer 18) so that only the feature under test changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dsa_cast.rubrics import get_rubric
from dsa_cast.schema import THINK
from dsa_cast.score import grade

Q = (
    "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins with 4. "
    "She sells the rest for $2 per egg. How many dollars does she make every day?"
)
PLAN = "Find the eggs left to sell, then multiply by the price per egg."
REASONING = "She has 16 - 3 - 4 = 9 eggs left, and 9 * 2 = 18 dollars."
EVIDENCE = "CALC: 16 - 3 - 4 = 9\nCALC: 9 * 2 = 18"
SANITY = "18 dollars is less than 16 * 2 = 32, the value of all eggs."
BODIES = {"Plan": PLAN, "Reasoning": REASONING, "Evidence": EVIDENCE, "Sanity_check": SANITY}
ORDER = ("Plan", "Reasoning", "Evidence", "Sanity_check")


def sections(order=ORDER, heading="{}:", **bodies):
    """The reasoning-block body: each heading on its own line, then its body."""
    b = {**BODIES, **bodies}
    return "\n".join(f"{heading.format(name)}\n{b[name]}" for name in order)


def dsa(answer="18", tag="reasoning", order=ORDER, heading="{}:", **bodies):
    return f"<{tag}>\n{sections(order, heading, **bodies)}\n</{tag}>\n<answer>{answer}</answer>"


CLEAN = dsa()
THINK_RUBRIC = get_rubric("dsa-cast", schema=THINK)


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    correct: bool | None
    issues: tuple[str, ...] = ()
    ref: object = "18"
    question: str | None = Q
    rubric: object = "dsa-cast"


ROWS = [
    # --- clean and correct, in the styles a model writes the final value --------------------
    Row("clean", CLEAN, True),
    Row("clean_no_question", CLEAN, True, question=None),
    Row("gsm8k_reference", CLEAN, True, ref="She makes 9 * 2 = $18.\n#### 18"),
    Row("int_reference", CLEAN, True, ref=18),
    Row("no_reference", CLEAN, None, ref=None),
    Row("glued_tags", f"<reasoning>{sections()}</reasoning><answer>18</answer>", True),
    Row("dollar_cents", dsa("$18.00"), True),
    Row(
        "thousands",
        dsa(
            "$1,234.00",
            Reasoning="1,000 dollars and 234 dollars make 1,234 dollars.",
            Evidence="CALC: 1000 + 234 = 1234",
            Sanity_check="1234 is plausible.",
        ),
        True,
        ref="1234",
        question=None,
    ),
    Row("boxed", dsa("\\boxed{18}"), True),
    Row("answer_is_sentence", dsa("The answer is 18."), True),
    Row("hash_style", dsa("#### 18"), True),
    Row("unit_words", dsa("18 dollars"), True),
    Row("decimal_zero", dsa("18.0"), True),
    Row("padded_answer", dsa("\n   18   \n"), True),
    Row(
        "unicode_minus",
        dsa(
            "−5",
            Reasoning="The change is 3 - 8 = -5 degrees.",
            Evidence="CALC: 3 - 8 = -5",
            Sanity_check="-5 is below zero.",
        ),
        True,
        ref="-5",
        question=None,
    ),
    Row(
        "percent_either",
        dsa("25%", Reasoning="One in 4 is 25%.", Evidence="CALC: 1/4 * 100 = 25", Sanity_check="25% is a quarter."),
        True,
        ref="25",
        question=None,
    ),
    Row(
        "fraction",
        dsa(
            "3/4",
            Reasoning="Three of four slices: 3/4.",
            Evidence="CALC: 3 / 4 = 0.75",
            Sanity_check="0.75 is below 1.",
        ),
        True,
        ref="0.75",
        question=None,
    ),
    Row(
        "latex_frac",
        dsa(
            "\\frac{3}{4}",
            Reasoning="Three of four slices: 3/4.",
            Evidence="CALC: 3 / 4 = 0.75",
            Sanity_check="0.75 is below 1.",
        ),
        True,
        ref="0.75",
        question=None,
    ),
    Row(
        "mixed_number",
        dsa(
            "1 1/2",
            Reasoning="3 halves is 1.5 cups.",
            Evidence="CALC: 3 / 2 = 1.5",
            Sanity_check="1.5 cups is a normal amount.",
        ),
        True,
        ref="1.5",
        question=None,
    ),
    Row("scientific", dsa("1.8e1"), True),
    Row("uppercase_tags", CLEAN.replace("reasoning>", "REASONING>"), True),
    Row("markdown_headings", dsa(heading="**{}:**"), True),
    Row("sanity_check_spaced", CLEAN.replace("Sanity_check:", "Sanity check:"), True),
    Row("annotation_evidence", dsa(Evidence="16 - 3 - 4 = <<16-3-4=9>>9\n9 * 2 = <<9*2=18>>18"), True),
    Row("chain_evidence", dsa(Evidence="16 - 3 - 4 = 9 eggs\n9 * 2 = 18 dollars"), True),
    Row("think_schema", dsa(tag="think"), True, rubric=THINK_RUBRIC),
    # --- wrong answers ---------------------------------------------------------------------
    Row("wrong", dsa("20"), False, ("unsupported_answer", "sanity_ignores_answer")),
    Row(
        "wrong_but_consistent",
        dsa(
            "20",
            Reasoning="She has 10 eggs left, and 10 * 2 = 20.",
            Evidence="CALC: 16 - 3 - 4 = 10\nCALC: 10 * 2 = 20",
            Sanity_check="20 dollars is plausible.",
        ),
        False,
        ("false_claim",),
    ),
    Row("sign_error", dsa("-18"), False, ("unsupported_answer", "sanity_ignores_answer")),
    # --- malformed answers -----------------------------------------------------------------
    Row("multiple_candidates", dsa("17, 18 or 19"), False, ("multiple_candidates",)),
    Row("empty_answer", dsa(""), False, ("empty_answer",)),
    Row("blank_answer", dsa("  \n "), False, ("empty_answer",)),
    Row("no_number", dsa("eighteen"), False, ("no_number",)),
    Row("expression_answer", dsa("9 * 2"), False, ("multiple_candidates",)),
    Row("oversize_answer", dsa("9" * 200), False, ("oversize",)),
    Row("missing_closing_answer", CLEAN[: -len("</answer>")], False, ("unclosed_answer", "truncated")),
    Row("second_answer_block", CLEAN + "\n<answer>18</answer>", False, ("duplicate_answer",)),
    Row("second_answer_differs", CLEAN + "\n<answer>20</answer>", False, ("duplicate_answer",)),
    Row("headings_in_answer", dsa("Sanity_check: 18"), True, ("heading_outside_reasoning",)),
    Row(
        "answer_before_reasoning",
        f"<answer>18</answer>\n<reasoning>\n{sections()}\n</reasoning>",
        True,
        ("answer_before_reasoning",),
    ),
    Row(
        "no_answer_block",
        f"<reasoning>\n{sections()}\n</reasoning>\nSo she makes 18 dollars.",
        False,
        ("missing_answer", "text_after"),
    ),
    Row(
        "prose_only",
        "She makes 16 - 3 - 4 = 9, 9 * 2 = 18 dollars. The answer is 18.",
        False,
        ("missing_reasoning", "missing_answer", "text_before", "missing_section"),
    ),
    # --- broken structure -------------------------------------------------------------------
    Row("text_before", "Sure! Here is my solution.\n" + CLEAN, True, ("text_before",)),
    Row("text_after", CLEAN + "\nI hope this helps!", True, ("text_after",)),
    Row("out_of_order", dsa(order=("Plan", "Evidence", "Reasoning", "Sanity_check")), True, ("section_out_of_order",)),
    Row("missing_evidence", dsa(order=("Plan", "Reasoning", "Sanity_check")), True, ("missing_section",)),
    Row(
        "duplicate_section",
        dsa(order=("Plan", "Reasoning", "Evidence", "Reasoning", "Sanity_check")),
        True,
        ("duplicate_section", "section_out_of_order"),
    ),
    Row(
        "duplicate_section_in_place",
        dsa(order=("Plan", "Reasoning", "Reasoning", "Evidence", "Sanity_check")),
        True,
        ("duplicate_section",),
    ),
    Row(
        "truncated_mid_reasoning",
        CLEAN[: CLEAN.index("Evidence:") + 5],
        False,
        ("unclosed_reasoning", "missing_answer", "truncated", "missing_section"),
    ),
    Row(
        "answer_nested_in_reasoning",
        f"<reasoning>\n{sections()}\n<answer>18</answer>\n</reasoning>",
        False,
        ("missing_answer", "nested_tag"),
    ),
    Row(
        "skeleton",
        dsa(Plan="", Reasoning="", Evidence="", Sanity_check=""),
        True,
        ("empty_section", "unsupported_answer", "sanity_ignores_answer"),
    ),
    Row(
        "boilerplate_sections",
        dsa(
            Plan="Solve the problem step by step.",
            Evidence="Basic arithmetic.",
            Sanity_check="The answer is reasonable.",
        ),
        True,
        ("boilerplate_section", "no_claims", "sanity_ignores_answer"),
    ),
    Row("copied_question", dsa(Plan=Q), True, ("copied_question",)),
    # --- evidence hacks -----------------------------------------------------------------------
    Row("false_evidence", dsa(Evidence="CALC: 16 - 3 - 4 = 9\nCALC: 9 * 2 = 20"), True, ("false_claim",)),
    Row("spammed_trivial_claims", dsa(Evidence="CALC: 1 + 1 = 2\n" * 200), True, ("trivial_claim",)),
    Row("ungrounded_claims", dsa(Evidence="CALC: 123 + 456 = 579\nCALC: 7 * 7 = 49"), True, ("ungrounded_claim",)),
    Row("uncheckable_claim", dsa(Evidence="CALC: 16 - 3 - 4 = 9\nCALC: 9 * two = 18"), True, ("uncheckable_claim",)),
    Row(
        "eval_injection",
        dsa(Evidence="CALC: __import__('os').system('true') = 0\nCALC: 9 * 2 = 18"),
        True,
        ("uncheckable_claim",),
    ),
    Row("power_tower", dsa(Evidence="CALC: 9^9^9^9^9 = 1\nCALC: 9 * 2 = 18"), True, ("uncheckable_claim",)),
]


def test_the_table_is_big_enough():
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_example(row: Row):
    g = grade(row.text, row.ref, rubric=row.rubric, question=row.question)
    assert g.correct is row.correct
    assert g.issues == row.issues
    assert 0.0 <= g.total <= g.max_total
    if row.issues == () and row.correct:
        assert g.total == g.max_total  # a clean, correct completion earns everything
    if row.correct is not None:
        assert (g.predicted is not None) or not row.correct


def test_every_flagged_row_scores_below_the_clean_one():
    clean = grade(CLEAN, "18", question=Q).total
    for row in ROWS:
        if row.issues and row.rubric == "dsa-cast" and row.ref == "18" and row.question == Q:
            assert grade(row.text, row.ref, question=row.question).total < clean, row.id


@pytest.mark.parametrize(
    ("row_id", "expected"),
    [
        ("skeleton", {"format": 0.5, "structure": 0.0, "correctness": 5.0, "evidence": 0.0, "coherence": 0.0}),
        (
            "spammed_trivial_claims",
            {"format": 1.0, "structure": 1.5, "correctness": 5.0, "evidence": 0.0, "coherence": 1.0},
        ),
        ("false_evidence", {"format": 1.0, "structure": 1.5, "correctness": 5.0, "evidence": 0.75, "coherence": 1.0}),
        (
            "second_answer_block",
            {"format": 0.5, "structure": 1.5, "correctness": 0.0, "evidence": 0.0, "coherence": 0.0},
        ),
        ("wrong", {"format": 1.0, "structure": 1.5, "correctness": 0.0, "evidence": 1.5, "coherence": 0.0}),
        ("out_of_order", {"format": 0.5, "structure": 0.75, "correctness": 5.0, "evidence": 0.0, "coherence": 0.0}),
    ],
)
def test_component_breakdown(row_id, expected):
    row = next(r for r in ROWS if r.id == row_id)
    g = grade(row.text, row.ref, rubric=row.rubric, question=row.question)
    assert dict(g.components) == expected


DOC = Path(__file__).resolve().parents[2] / "docs" / "rewards.md"


def _doc_table(header_start: str) -> list[list[str]]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[start + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def test_docs_worked_examples_match_the_code():
    rows = _doc_table("| example | format |")
    assert len(rows) >= 10
    by_id = {r.id: r for r in ROWS}
    for rid, fmt, struct, corr, evid, coh, total, issues in rows:
        row = by_id[rid]
        g = grade(row.text, row.ref, rubric=row.rubric, question=row.question)
        assert [g.components[k] for k in ("format", "structure", "correctness", "evidence", "coherence")] == [
            float(fmt),
            float(struct),
            float(corr),
            float(evid),
            float(coh),
        ], rid
        assert g.total == float(total), rid
        assert g.issues == tuple(i.strip() for i in issues.split(",") if i.strip()), rid


def test_docs_weights_match_the_code():
    from dsa_cast.rubrics import DsaCastRubric, DsaCastWeights

    rows = {n.strip("*"): float(w.strip("*")) for n, w in _doc_table("| component | weight |")}
    w = DsaCastWeights()
    assert rows == {
        "format": w.format,
        "structure": w.structure,
        "correctness": w.correctness,
        "evidence": w.evidence,
        "coherence": w.coherence,
        "total": w.total,
    }
    r = DsaCastRubric()
    text = DOC.read_text(encoding="utf-8")
    for needle in (
        f"`min_section_words` = **{r.min_section_words}**",
        f"`min_novel_words` = **{r.min_novel_words}**",
        f"`unsound_factor` = **{r.unsound_factor:g}**",
        f"format_partial = {r.format_partial}",
        f"near_share = {r.near_share}",
        f"malformed_share = {r.malformed_share}",
        f"support_share = {r.support_share}",
        f"out_of_order_factor = {r.out_of_order_factor}",
        f"`Limits.max_claims` = {r.limits.max_claims}",
    ):
        assert needle in text, needle
    for code in sorted(r.unsound_codes) + sorted(r.structure_void_codes) + sorted(r.answer_disqualifiers):
        assert f"`{code}`" in text or code in text, code


def test_docs_seed_worked_example():
    g = grade(CLEAN, "18", rubric="seed", detail=True)
    n = len(CLEAN.split("<reasoning>")[1].split("</reasoning>")[0])
    text = DOC.read_text(encoding="utf-8")
    assert f"the reasoning body is {n} characters" in text
    assert f"{g.detail.scores['completeness']:.5f}" in text
    assert (
        f"cast = 3 x 1 + 2 x {g.detail.scores['completeness']:.5f} + 1 + 1 x 2/2 = {g.components['cast']:.5f}" in text
    )
    assert f"total {g.total:.5f} of {g.max_total:g}" in text
