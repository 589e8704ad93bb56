"""The original notebook's three DSA-CAST reward functions, re-implemented as a benchmark anchor.

Written from the seed notebook's pipeline description (``seed_pipeline.md`` §5) so that its *costs*
show side by side with ``dsa_cast``: whole-completion regular expressions with nested lazy
quantifiers (Python's backtracking ``re`` engine, as the notebook used), headings searched anywhere
in the text, "GSM8K ``####`` first, else the first number" answer extraction, ratio partial credit
and length credit. Those weaknesses are kept on purpose: this module measures them, it does not fix
them.

One deliberate departure: the notebook checked ``CALC: expr = result`` lines with a general
computer-algebra parser, which executes arbitrary model text. Here both sides go through the
bounded, exact evaluator :func:`dsa_cast.claims.evaluate` instead, so the anchor cannot run
code and cannot hang on ``9**9**9**9``. Everything else follows the page.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from dsa_cast.claims import EvalError, evaluate

__all__ = [
    "SeedWeights",
    "SEED",
    "math_accuracy",
    "seed_correct",
    "seed_score",
    "reward_format_exact",
    "reward_format_soft",
    "reward_cast_math_and_completeness",
    "format_exact_score",
    "format_soft_score",
]


@dataclass(frozen=True)
class SeedWeights:
    """Every constant of the notebook's reward, as listed in seed_pipeline.md §5."""

    exact_format: float = 3.0  # reward_format_exact: all-or-nothing
    tag_pair: float = 1.0  # reward_format_soft: +/- per tag pair
    heading: float = 0.75  # reward_format_soft: +/- per heading
    heading_order: float = 1.0  # reward_format_soft: +/- when all four present
    w_accuracy: float = 3.0  # CAST weights
    w_completeness: float = 2.0
    w_format_bonus: float = 1.0
    w_calc: float = 1.0
    near_ratio: float = 0.1  # ratio within 1 +/- 0.1 pays `near_credit`
    near_credit: float = 0.5
    far_ratio: float = 0.2  # ratio within 1 +/- 0.2 pays `far_credit`
    far_credit: float = 0.25
    length_target_chars: int = 300  # completeness: reasoning length / 300, capped at 1
    tags_only_bonus: float = 0.5  # format bonus when only the tags are right


SEED = SeedWeights()
HEADINGS = ("Plan:", "Reasoning:", "Evidence:", "Sanity_check:")

# The notebook's regular expressions (re module, DOTALL, lazy and nested: their cost is the point).
_EXACT = re.compile(
    r"^\s*<reasoning>\s*Plan:.*?Reasoning:.*?Evidence:.*?Sanity_check:.*?</reasoning>"
    r"\s*<answer>.*?</answer>\s*$",
    re.DOTALL,
)
_REASONING = re.compile(r"<reasoning>(.*?)</reasoning>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GSM8K_FINAL = re.compile(r"####\s*([-+]?[\d,]*\.?\d+)")
_FIRST_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_CALC = re.compile(r"CALC:\s*(.+?)\s*=\s*(.+)")


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except (ValueError, OverflowError):
        return None


def _reference(ref: object) -> float | None:
    """The dataset's ``answer`` column: the ``####`` value (a full GSM8K solution also works)."""
    if ref is None:
        return None
    text = str(ref)
    if "####" in text:
        text = text.split("####")[-1]
    return _to_float(text.strip())


def _predicted(completion: str) -> float | None:
    """Number in the answer block: GSM8K ``####`` style first, else the first number."""
    block = _ANSWER.search(completion)
    if block is None:
        return None
    body = block.group(1)
    final = _GSM8K_FINAL.search(body)
    if final is not None:
        return _to_float(final.group(1))
    first = _FIRST_NUMBER.search(body)
    return None if first is None else _to_float(first.group(0))


def math_accuracy(completion: str, ref: object, w: SeedWeights = SEED) -> float:
    """1 if equal, 0.5 / 0.25 when the ratio is within 10 % / 20 %, else 0 (the notebook's rule)."""
    pred, gold = _predicted(completion), _reference(ref)
    if pred is None or gold is None:
        return 0.0
    if pred == gold:
        return 1.0
    if gold == 0:
        return 0.0
    ratio = pred / gold
    if abs(ratio - 1.0) <= w.near_ratio:
        return w.near_credit
    if abs(ratio - 1.0) <= w.far_ratio:
        return w.far_credit
    return 0.0


def seed_correct(completion: str, ref: object) -> bool:
    """The notebook's strict accuracy: the extracted number equals the reference."""
    return math_accuracy(completion, ref) == 1.0


def _positions(text: str) -> list[int]:
    return [text.find(h) for h in HEADINGS]  # searched anywhere, as the notebook did


def format_exact_score(text: str, w: SeedWeights) -> float:
    return w.exact_format if _EXACT.match(text) else 0.0


def format_soft_score(text: str, w: SeedWeights) -> float:
    score = w.tag_pair if _REASONING.search(text) else -w.tag_pair
    score += w.tag_pair if _ANSWER.search(text) else -w.tag_pair
    pos = _positions(text)
    score += sum(w.heading if p >= 0 else -w.heading for p in pos)
    if all(p >= 0 for p in pos):
        score += w.heading_order if pos == sorted(pos) else -w.heading_order
    return score


def _calc_consistency(text: str) -> float:
    """Fraction of ``CALC: a = b`` lines whose sides are equal (0 when there are none)."""
    total = ok = 0
    for m in _CALC.finditer(text):
        total += 1
        try:
            if evaluate(m.group(1)) == evaluate(m.group(2).strip()):
                ok += 1
        except (EvalError, ZeroDivisionError, OverflowError, ValueError):
            pass
    return ok / total if total else 0.0


def _cast(text: str, ref: object, w: SeedWeights) -> float:
    pos = _positions(text)
    present = sum(p >= 0 for p in pos) / len(HEADINGS)
    in_order = 1.0 if all(p >= 0 for p in pos) and pos == sorted(pos) else 0.0
    reasoning = _REASONING.search(text)
    length = min(len(reasoning.group(1)) / w.length_target_chars, 1.0) if reasoning else 0.0
    completeness = (present + in_order + length) / 3.0
    tags = bool(reasoning) and bool(_ANSWER.search(text))
    bonus = 1.0 if tags and in_order else (w.tags_only_bonus if tags else 0.0)
    return (
        w.w_accuracy * math_accuracy(text, ref, w)
        + w.w_completeness * completeness
        + w.w_format_bonus * bonus
        + w.w_calc * _calc_consistency(text)
    )


def seed_score(completion: str, ref: object, w: SeedWeights = SEED) -> float:
    """The notebook's summed reward for one completion (the three functions added)."""
    return format_exact_score(completion, w) + format_soft_score(completion, w) + _cast(completion, ref, w)


def _answers(kwargs: dict, n: int) -> Sequence[object]:
    answers = kwargs.get("answer")
    return [None] * n if answers is None else list(answers)


def reward_format_exact(prompts, completions, **kwargs) -> list[float]:
    """3.0 when the whole completion has the exact layout, else 0 (nested lazy regex)."""
    return [format_exact_score(c, SEED) for c in completions]


def reward_format_soft(prompts, completions, **kwargs) -> list[float]:
    """Tag and heading presence/order shaping, -7 .. +6."""
    return [format_soft_score(c, SEED) for c in completions]


def reward_cast_math_and_completeness(prompts, completions, **kwargs) -> list[float]:
    """3 x accuracy + 2 x completeness + 1 x format bonus + 1 x CALC consistency."""
    refs = _answers(kwargs, len(completions))
    return [_cast(c, r, SEED) for c, r in zip(completions, refs, strict=True)]


def _self_check() -> None:
    ok = (
        "<reasoning>\nPlan: p\nReasoning: r\nEvidence:\nCALC: 2*3 = 6\nSanity_check: s\n</reasoning>\n"
        "<answer>6</answer>"
    )
    assert seed_correct(ok, "6") and not seed_correct(ok, "7")
    assert reward_format_exact(None, [ok]) == [3.0]
    assert _calc_consistency(ok) == 1.0
    assert math_accuracy(ok.replace(">6<", ">95<"), "100") == 0.5
    assert _predicted("<answer>x</answer>") is None and _reference("a\n#### 1,234") == Fraction(1234)


if __name__ == "__main__":
    _self_check()
    print("seed_anchor self-check ok")
