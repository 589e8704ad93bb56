"""Public entry point: grade completions, and the seed's Tunix-style reward functions.

``grade`` / ``grade_batch`` return :class:`~dsa_cast.rubrics.Grade` objects (total, weighted
components, correctness, predicted answer, issue codes); ``explain`` adds the detail the CLI
prints. The three ``reward_*`` functions keep the original notebook's names and signature
``(prompts, completions, **kwargs) -> list[float]`` so a Tunix ``GRPOLearner`` can use them as
they are; they read the reference from ``kwargs["answer"]`` (a list or a numpy array: duck-typed,
numpy is never imported here). Formulas: ``docs/rewards.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any, cast

from dsa_cast.columns import column, plain_value
from dsa_cast.rubrics import (
    DEFAULT_RUBRIC,
    RUBRICS,
    Detail,
    DsaCastRubric,
    Grade,
    Rubric,
    SeedRubric,
    get_rubric,
    resolve_rubric,
)

__all__ = [
    "Grade",
    "Detail",
    "Rubric",
    "RUBRICS",
    "get_rubric",
    "grade",
    "grade_batch",
    "explain",
    "reward_format_exact",
    "reward_format_soft",
    "reward_cast_math_and_completeness",
]


def _check_question(question: object, where: str) -> str | None:
    if question is None or isinstance(question, str):
        return question
    raise TypeError(f"{where} must be str or None, got {type(question).__name__}")


def grade(
    completion: str,
    answer: object = None,
    *,
    rubric: str | Rubric = DEFAULT_RUBRIC,
    question: str | None = None,
    detail: bool = False,
) -> Grade:
    """Grade one completion.

    Args:
      completion: the model's text (any ``str``; never raises for one).
      answer: the reference: a number, a ``Fraction``, or text such as ``"1,234"`` or a GSM8K
        solution ending ``#### 1234``; None grades without a reference (``correct`` is None).
      rubric: a registered name (``"dsa-cast"``, ``"seed"``, ``"format"``) or a Rubric object.
      question: the problem text, used by ``dsa-cast`` to ground Evidence claims and to spot
        sections that only copy the question.
      detail: also return what the rubric looked at (``Grade.detail``).

    Raises:
      TypeError: ``completion`` (or ``question``) is not a str, or ``answer`` has an unsupported type.
      ValueError: ``answer`` holds no single number, or ``rubric`` is unknown.

    Example:
      >>> text = ("<reasoning>\\nPlan:\\nMultiply.\\nReasoning:\\nSix sevens.\\nEvidence:\\n"
      ...         "CALC: 6*7 = 42\\nSanity_check:\\n42 / 7 = 6.\\n</reasoning>\\n<answer>42</answer>")
      >>> g = grade(text, "42")
      >>> g.correct, g.predicted, g.total, g.max_total
      (True, '42', 7.25, 10.0)
      >>> dict(g.components)
      {'format': 1.0, 'structure': 0.75, 'correctness': 5.0, 'evidence': 0.0, 'coherence': 0.5}
      >>> grade("<answer>41</answer>", "#### 42").issues
      ('missing_reasoning', 'missing_section')
    """
    if not isinstance(completion, str):
        raise TypeError(f"grade(): completion must be str, got {type(completion).__name__}")
    question = _check_question(question, "grade(): question")
    return resolve_rubric(rubric).score(completion, answer, question, detail)


def explain(
    completion: str, answer: object = None, *, rubric: str | Rubric = DEFAULT_RUBRIC, question: str | None = None
) -> Grade:
    """``grade(..., detail=True)``: the grade plus the parse, the extraction and the verdicts."""
    return grade(completion, answer, rubric=rubric, question=question, detail=True)


def grade_batch(
    completions: Sequence[str],
    answers: Sequence[object] | None = None,
    *,
    rubric: str | Rubric = DEFAULT_RUBRIC,
    questions: Sequence[str] | None = None,
    detail: bool = False,
) -> list[Grade]:
    """Grade a list of completions (``answers`` / ``questions`` line up with it, or are None).

    Every completion is type-checked before any is graded; errors name the index.
    """
    if isinstance(completions, (str, bytes, Mapping, Set)):
        raise TypeError(f"grade_batch(): completions must be a sequence of str, got one {type(completions).__name__}")
    completions = list(completions)
    n = len(completions)
    for i, c in enumerate(completions):
        if not isinstance(c, str):
            raise TypeError(f"grade_batch(): completions[{i}] must be str, got {type(c).__name__}")
    refs = _column(answers, n, "grade_batch(): answers")
    qs = [
        _check_question(q, f"grade_batch(): questions[{i}]")
        for i, q in enumerate(_column(questions, n, "grade_batch(): questions"))
    ]
    r = resolve_rubric(rubric)
    if isinstance(r, DsaCastRubric):  # read each distinct reference once (G completions share one)
        memo: dict[object, object] = {}
        for i, a in enumerate(refs):
            if isinstance(a, str):
                if a not in memo:
                    try:
                        memo[a] = r.reference_value(a)
                    except ValueError as err:
                        raise ValueError(f"grade_batch(): answers[{i}]: {err}") from err
                refs[i] = memo[a]
    out = []
    for i in range(n):
        try:
            out.append(r.score(completions[i], refs[i], qs[i], detail))
        except TypeError as err:
            raise TypeError(f"grade_batch(): answers[{i}]: {err}") from err
        except ValueError as err:
            raise ValueError(f"grade_batch(): answers[{i}]: {err}") from err
    return out


def _column(values: Sequence[object] | None, n: int, label: str) -> list[object]:
    """One plain value per completion (:func:`dsa_cast.columns.column`); None everywhere when
    ``values`` is None."""
    return [None] * n if values is None else column(values, n, label)


# --------------------------------------------------------------------------------------
# The seed notebook's reward functions (Tunix signature), backed by the "seed" rubric.
# --------------------------------------------------------------------------------------

_seed = RUBRICS["seed"]
assert isinstance(_seed, SeedRubric)
_SEED: SeedRubric = _seed
assert isinstance(_SEED, SeedRubric)


def _texts(completions: Sequence[str], fn: str) -> list[str]:
    if isinstance(completions, (str, bytes, Mapping, Set)):
        raise TypeError(f"{fn}(): completions must be a sequence of str, got one {type(completions).__name__}")
    out: list[object] = []
    for i, c in enumerate(completions):
        try:
            out.append(plain_value(c))
        except ValueError as err:
            raise ValueError(f"{fn}(): completions[{i}]: {err}") from None
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise TypeError(f"{fn}(): completions[{i}] must be str, got {type(v).__name__}")
    return cast(list[str], out)  # every entry checked just above


def reward_format_exact(prompts: object, completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The seed's exact-format reward: 3.0 for the exact layout, else 0.0."""
    return [_SEED.exact_format if _SEED.format_exact_ok(c) else 0.0 for c in _texts(completions, "reward_format_exact")]


def reward_format_soft(prompts: object, completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The seed's soft-format reward: +/- for tag pairs, headings and their order (-5 .. +6)."""
    return [_SEED.format_soft_score(c) for c in _texts(completions, "reward_format_soft")]


def reward_cast_math_and_completeness(prompts: object, completions: Sequence[str], **kwargs: Any) -> list[float]:
    """The seed's CAST reward: 3 x accuracy + 2 x completeness + 1 x format bonus + 1 x CALC
    consistency, against ``kwargs["answer"]`` (one reference per completion)."""
    texts = _texts(completions, "reward_cast_math_and_completeness")
    refs = _column(kwargs.get("answer"), len(texts), "reward_cast_math_and_completeness(): answer")
    out = []
    for i, (c, r) in enumerate(zip(texts, refs, strict=True)):
        try:
            out.append(_SEED.cast_score(c, r))
        except (TypeError, ValueError) as err:
            raise type(err)(f"reward_cast_math_and_completeness(): answer[{i}]: {err}") from err
    return out


# Framework adapters (Tunix, TRL, verl, OpenRLHF); dsa_cast.adapters imports only dsa_cast.rubrics.
from dsa_cast.adapters import (  # noqa: E402
    compute_score,
    compute_score_batch,
    reward_func,
    trl_rewards,
    tunix_rewards,
)

__all__ += ["tunix_rewards", "trl_rewards", "compute_score", "compute_score_batch", "reward_func"]
