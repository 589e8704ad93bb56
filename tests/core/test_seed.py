"""The ``seed`` rubric and the notebook-named reward functions.

Three kinds of checks: numbers computed by hand from the formulas of seed_pipeline.md §5, an
oracle written the way the notebook was (backtracking regular expressions) that the linear-time
implementation must agree with on generated text, and the Tunix calling convention.
"""

from __future__ import annotations

import contextlib
import re
import time
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast.claims import EvalError, evaluate
from dsa_cast.rubrics import SeedRubric, get_rubric
from dsa_cast.score import (
    grade,
    grade_batch,
    reward_cast_math_and_completeness,
    reward_format_exact,
    reward_format_soft,
)

SEED = SeedRubric()


def dsa(plan="p", reasoning="r", evidence="e", sanity="s", answer="42", gap="\n"):
    return (
        f"<reasoning>{gap}Plan: {plan}{gap}Reasoning: {reasoning}{gap}Evidence: {evidence}"
        f"{gap}Sanity_check: {sanity}{gap}</reasoning>{gap}<answer>{answer}</answer>"
    )


def body_len(text: str) -> int:
    return len(text.split("<reasoning>", 1)[1].split("</reasoning>", 1)[0])


# --------------------------------------------------------------------------------------
# Hand-computed numbers (formulas of seed_pipeline.md §5, weights 3/2/1/1).
# --------------------------------------------------------------------------------------


def test_clean_completion_by_hand():
    text = dsa(evidence="CALC: 6*7 = 42\nCALC: 40 + 2 = 42")
    n = body_len(text)
    assert n < 300
    completeness = (1.0 + 1.0 + n / 300) / 3
    cast = 3 * 1.0 + 2 * completeness + 1 * 1.0 + 1 * 1.0
    g = grade(text, "42", rubric="seed")
    assert g.components["format_exact"] == 3.0
    assert g.components["format_soft"] == 1 + 1 + 4 * 0.75 + 1 == 6.0
    assert g.components["cast"] == pytest.approx(cast, abs=1e-12)
    assert g.total == 3.0 + 6.0 + g.components["cast"]
    assert g.correct is True and g.predicted == "42" and g.issues == ()
    assert g.max_total == 3 + 6 + 7 and SEED.min_total == -5


def test_long_reasoning_caps_length_credit():
    text = dsa(reasoning="x" * 400, evidence="CALC: 2 + 2 = 4")
    g = grade(text, "42", rubric="seed")
    assert g.components["cast"] == 3 + 2 * 1.0 + 1 + 1  # completeness (1+1+1)/3


@pytest.mark.parametrize(
    ("written", "ref", "accuracy"),
    [
        ("42", "42", 1.0),
        ("95", "100", 0.5),  # ratio 0.95
        ("110", "100", 0.5),  # ratio 1.1: the closed band [0.9, 1.1]
        ("90", "100", 0.5),
        ("85", "100", 0.25),  # ratio 0.85
        ("120", "100", 0.25),
        ("121", "100", 0.0),
        ("79", "100", 0.0),
        ("-100", "100", 0.0),
        ("0", "0", 1.0),
        ("1", "0", 0.0),  # reference 0: only equality pays
        ("1,234.00", "1234", 1.0),  # commas removed, compared as floats
        ("$18", "18", 1.0),
        ("17, 18 or 19", "17", 1.0),  # quirk: the first number pays, however many follow
        ("17, 18 or 19", "18", 0.5),  # 17/18 = 0.944
        ("5 #### 18", "18", 1.0),  # the #### number comes first
        ("##### 7", "7", 1.0),
        ("####, 3", "3", 1.0),  # "####" not followed by a number: falls back to the first number
        ("####, 3", "4", 0.0),  # 3/4 = 0.75: outside both bands
        ("no number", "3", 0.0),
        ("72.", "72", 1.0),
        ("−5", "5", 1.0),  # quirk: the Unicode minus is not a sign, so this reads 5
    ],
)
def test_accuracy_terms_by_hand(written, ref, accuracy):
    text = dsa(answer=written, evidence="none")
    n = body_len(text)
    expected = 3 * accuracy + 2 * ((1 + 1 + n / 300) / 3) + 1 + 0
    assert reward_cast_math_and_completeness(None, [text], answer=[ref]) == [pytest.approx(expected, abs=1e-12)]
    assert grade(text, ref, rubric="seed").correct is (accuracy == 1.0)


def test_gsm8k_reference_and_numeric_references():
    text = dsa(answer="1234")
    for ref in ("Some solution text\n#### 1,234", "1234", 1234, 1234.0):
        assert grade(text, ref, rubric="seed").correct is True
    assert grade(text, None, rubric="seed").correct is None
    # an unreadable reference pays no accuracy (the notebook's float() failed)
    g = grade(text, "twelve", rubric="seed")
    assert g.correct is False


def test_soft_format_by_hand():
    assert reward_format_soft(None, ["nothing at all"]) == [-1 - 1 - 4 * 0.75]  # -5: the floor
    assert reward_format_soft(None, ["<reasoning>Plan: a</reasoning>"]) == [1 - 1 + 0.75 - 3 * 0.75]
    out_of_order = "<reasoning>Reasoning: Plan: Evidence: Sanity_check:</reasoning><answer>1</answer>"
    assert reward_format_soft(None, [out_of_order]) == [1 + 1 + 3 - 1]
    # headings anywhere count, even inside the answer block (quirk)
    in_answer = "<reasoning>x</reasoning><answer>Plan: Reasoning: Evidence: Sanity_check: 4</answer>"
    assert reward_format_soft(None, [in_answer]) == [6.0]
    # an unclosed pair is missing
    assert reward_format_soft(None, ["<reasoning> <answer>1</answer>"]) == [-1 + 1 - 3]


def test_format_bonus_and_completeness_by_hand():
    tags_only = "<reasoning>Evidence: Plan:</reasoning><answer>7</answer>"
    n = body_len(tags_only)
    comp = (0.5 + 0.0 + n / 300) / 3
    assert reward_cast_math_and_completeness(None, [tags_only], answer=["7"]) == [
        pytest.approx(3 + 2 * comp + 0.5 + 0, abs=1e-12)
    ]
    no_tags = "Plan: Reasoning: Evidence: Sanity_check: 7"
    assert reward_cast_math_and_completeness(None, [no_tags], answer=["7"]) == [
        pytest.approx(2 * ((1 + 1 + 0) / 3), abs=1e-12)  # no answer block: accuracy 0, bonus 0
    ]


def test_calc_consistency_by_hand():
    ev = "CALC: 2 + 3 = 5\nCALC: 2 * 3 = 7\nCALC: 10 / 4 = 2.5\nCALC: __import__('os') = 0"
    text = dsa(evidence=ev)
    n = body_len(text)
    expected = 3 + 2 * ((1 + 1 + n / 300) / 3) + 1 + 1 * (2 / 4)
    g = grade(text, "42", rubric="seed", detail=True)
    assert g.components["cast"] == pytest.approx(expected, abs=1e-12)
    assert g.detail.scores["calc_lines"] == 4
    assert "false_claim" in g.issues


def test_seed_reference_types():
    from decimal import Decimal

    text = dsa(answer="2.5")
    assert grade(text, Decimal("2.5"), rubric="seed").correct is True
    assert grade(text, Fraction(5, 2), rubric="seed").correct is True
    for bad in ({"a": 1}, [1], [10**5000], (2.5,), b"2.5", True):
        with pytest.raises(TypeError, match="reference must be a number or str"):
            grade(text, bad, rubric="seed")
    for bad in (
        "nan",
        "inf",
        "#### -Infinity",
        "1" * 5000,
        10**5000,
        float("nan"),
        Decimal("1e100000000"),
        Fraction(10**5000, 3),
    ):
        with pytest.raises(ValueError, match="is not a finite number"):
            grade(text, bad, rubric="seed")
    with pytest.raises(ValueError, match=r"answer\[1\]"):  # the reward function names the item
        reward_cast_math_and_completeness(None, [text, text], answer=["2.5", "nan"])


def test_calc_lines_past_the_cap_are_not_checked():
    # the first max_calc_lines lines are checked; 16,000 hostile lines cost no more than that
    true_then_false = "CALC: 1 + 1 = 2\n" * 512 + "CALC: 1 + 1 = 3\n" * 16_000
    g = grade(dsa(evidence=true_then_false), "42", rubric="seed", detail=True)
    assert g.detail.scores["calc_lines"] == 512 and g.detail.scores["calc_consistency"] == 1.0
    assert "false_claim" not in g.issues
    small = get_rubric("seed", max_calc_lines=2)
    assert small.calc_lines("CALC: 1 = 1\nCALC: x\nCALC: =\nCALC: 2 = 2\nCALC: 3 = 4\n") == [("1", "1"), ("2", "2")]
    with pytest.raises(ValueError, match="max_calc_lines"):
        SeedRubric(max_calc_lines=0)


def test_exact_format_cases():
    good = dsa()
    assert reward_format_exact(None, [good, "  \n" + good + "\n\n"]) == [3.0, 3.0]
    assert reward_format_exact(None, [good + " trailing"]) == [0.0]
    assert reward_format_exact(None, ["text " + good]) == [0.0]
    assert reward_format_exact(None, [good.replace("Plan:", "Intro Plan:")]) == [0.0]  # \s*Plan:
    swapped = good.replace("Evidence:", "EVIDENCE").replace("Sanity_check:", "Evidence:")
    assert reward_format_exact(None, [swapped]) == [0.0]
    # the notebook's lazy regex accepts a second answer block before the final </answer> (quirk)
    assert reward_format_exact(None, [good + "<answer>7</answer>"]) == [3.0]


def test_safe_evaluator_not_eval():
    # the notebook handed these to a computer-algebra parser; here they are refused, fast.
    for side in ("__import__('os').system('true')", "9**9**9**9", "x" * 100_000):
        with pytest.raises(EvalError):
            evaluate(side)
    text = dsa(evidence="CALC: 9**9**9**9 = 1\n" * 2000)
    t = time.perf_counter()
    g = grade(text, "42", rubric="seed")
    assert time.perf_counter() - t < 5  # a generous guard only: timings live in benchmarks/
    assert g.components["cast"] < 7


# --------------------------------------------------------------------------------------
# Oracle: the formulas written the way the notebook did (backtracking regexes), compared with
# the linear-time implementation on generated text.
# --------------------------------------------------------------------------------------

_EXACT = re.compile(
    r"^\s*<reasoning>\s*Plan:.*?Reasoning:.*?Evidence:.*?Sanity_check:.*?</reasoning>"
    r"\s*<answer>.*?</answer>\s*$",
    re.DOTALL,
)
_REASONING = re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_HASH = re.compile(r"####\s*([-+]?[\d,]*\.?\d+)")
_FIRST = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_CALC = re.compile(r"CALC:\s*(.+?)\s*=\s*(.+)")
_HEADS = ("Plan:", "Reasoning:", "Evidence:", "Sanity_check:")


def _f(s):
    try:
        return float(s.replace(",", ""))
    except (ValueError, OverflowError):
        return None


def oracle(text: str, ref: str) -> tuple[float, float, float]:
    exact = 3.0 if _EXACT.match(text) else 0.0
    r, a = _REASONING.search(text), _ANSWER.search(text)
    pos = [text.find(h) for h in _HEADS]
    allp = all(p >= 0 for p in pos)
    order = allp and pos == sorted(pos)
    soft = (1 if r else -1) + (1 if a else -1) + sum(0.75 if p >= 0 else -0.75 for p in pos)
    if allp:
        soft += 1 if order else -1
    pred = None
    if a:
        m = _HASH.search(a.group(1)) or _FIRST.search(a.group(1))
        if m:
            pred = _f(m.group(1) if m.re is _HASH else m.group(0))
    gold = _f(ref.split("####")[-1].strip())
    acc = 0.0
    if pred is not None and gold is not None:
        if pred == gold:
            acc = 1.0
        elif gold != 0:
            ratio = pred / gold
            acc = 0.5 if 0.9 <= ratio <= 1.1 else 0.25 if 0.8 <= ratio <= 1.2 else 0.0
    comp = (
        sum(p >= 0 for p in pos) / 4 + (1.0 if order else 0.0) + (min(len(r.group(1)) / 300, 1.0) if r else 0.0)
    ) / 3
    tags = bool(r) and bool(a)
    bonus = 1.0 if tags and order else 0.5 if tags else 0.0
    total = ok = 0
    for m in _CALC.finditer(text):
        total += 1
        with contextlib.suppress(EvalError):
            ok += evaluate(m.group(1)) == evaluate(m.group(2).strip())
    calc = ok / total if total else 0.0
    return exact, soft, 3 * acc + 2 * comp + bonus + calc


TOKENS = st.sampled_from(
    [
        "<reasoning>",
        "</reasoning>",
        "<answer>",
        "</answer>",
        "Plan:",
        "Reasoning:",
        "Evidence:",
        "Sanity_check:",
        " ",
        "\n",
        "\t",
        "\u00a0",
        "\x1c",
        "\u2028",
        "x",
        "####",
        "#",
        "12",
        "3.5",
        "1,000",
        "-",
        "+",
        ",",
        ".",
        "7",
        "٣",
        "\nCALC: 2+3 = 5\n",
        "\nCALC: 2*3 = 7\n",
        "\nCALC: 12 / 4 = 3",
        "CALC: 1,000 + 7 = 1007 apples",
    ]
)


@given(st.lists(TOKENS, max_size=40), st.sampled_from(["12", "3.5", "1,000", "0", "x", "#### 7"]))
def test_linear_implementation_agrees_with_regex_oracle(tokens, ref):
    text = "".join(tokens)
    g = grade(text, ref, rubric="seed")
    exact, soft, cast = oracle(text, ref)
    assert g.components["format_exact"] == exact
    assert g.components["format_soft"] == soft
    assert g.components["cast"] == pytest.approx(cast, abs=1e-12)


@given(st.lists(TOKENS, max_size=12), st.lists(TOKENS, max_size=12), st.lists(TOKENS, max_size=6))
def test_exact_format_agrees_on_near_miss_layouts(pre, mid, post):
    text = "".join(pre) + dsa(plan="".join(mid), answer="".join(post))
    assert reward_format_exact(None, [text]) == [oracle(text, "1")[0]]


# --------------------------------------------------------------------------------------
# Calling convention.
# --------------------------------------------------------------------------------------


class FakeArray:
    """Duck-types a 1-D numpy array of cells (no numpy in the core tests)."""

    def __init__(self, cells):
        self.cells = list(cells)

    def __len__(self):
        return len(self.cells)

    def __iter__(self):
        return iter(self.cells)


class FakeScalar:
    ndim = 0

    def __init__(self, v):
        self.v = v

    def item(self):
        return self.v


def test_reward_functions_sum_to_the_seed_total():
    texts = [dsa(), dsa(answer="41"), "junk", dsa(evidence="CALC: 1+1 = 3")]
    refs = ["42", "42", "42", "#### 42"]
    kwargs = {"answer": refs, "question": ["q"] * 4, "mode": "train", "trajectory_ids": [0, 1, 2, 3]}
    parts = [
        reward_format_exact(["p"] * 4, texts, **kwargs),
        reward_format_soft(["p"] * 4, texts, **kwargs),
        reward_cast_math_and_completeness(["p"] * 4, texts, **kwargs),
    ]
    totals = [sum(col) for col in zip(*parts, strict=True)]
    assert totals == [g.total for g in grade_batch(texts, refs, rubric="seed")]
    assert all(isinstance(x, float) for p in parts for x in p)


def test_reward_functions_accept_array_like_answers():
    texts = [dsa(), dsa(answer="7")]
    plain = reward_cast_math_and_completeness(None, texts, answer=["42", "7"])
    assert reward_cast_math_and_completeness(None, texts, answer=FakeArray(["42", "7"])) == plain
    assert reward_cast_math_and_completeness(None, texts, answer=FakeArray([b"42", b"7"])) == plain
    scalars = FakeArray([FakeScalar(42), FakeScalar(7)])
    assert reward_cast_math_and_completeness(None, texts, answer=scalars) == plain
    assert reward_cast_math_and_completeness(None, FakeArray(texts), answer=["42", "7"]) == plain


def test_reward_functions_errors_name_the_position():
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        reward_format_exact(None, ["ok", 3])
    with pytest.raises(TypeError, match=r"completions\[0\]"):
        reward_format_soft(None, [None])
    with pytest.raises(ValueError, match="2 entries for 1"):
        reward_cast_math_and_completeness(None, ["a"], answer=["1", "2"])
    assert reward_cast_math_and_completeness(None, [dsa()]) == [
        reward_cast_math_and_completeness(None, [dsa()], answer=[None])[0]
    ]


def test_seed_options_and_validation():
    r = get_rubric("seed", exact_format=1.0, near_band=(0.95, 1.05))
    assert r.score(dsa(), "42").components["format_exact"] == 1.0
    assert r.accuracy(0.9, 1.0) == 0.25
    with pytest.raises(ValueError, match="near_band"):
        SeedRubric(near_band=(1.1, 0.9))
    with pytest.raises(ValueError, match="length_target_chars"):
        SeedRubric(length_target_chars=0)
    assert SeedRubric().max_total == 16.0
    assert Fraction(grade(dsa(answer="2.50"), "2.5", rubric="seed").predicted) == Fraction(5, 2)
