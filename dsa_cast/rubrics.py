"""Rubrics: the scoring rules that turn one completion into a :class:`Grade`.

Three rubrics, registered by name in :data:`RUBRICS` (options via :func:`get_rubric`):

* ``"dsa-cast"`` (:class:`DsaCastRubric`, the default): the hardened rubric. Components
  ``format``, ``structure``, ``correctness``, ``evidence``, ``coherence``.
* ``"seed"`` (:class:`SeedRubric`): the original notebook's three reward functions, number for
  number, linear-time and with the safe evaluator. Components ``format_exact``, ``format_soft``,
  ``cast``.
* ``"format"`` (:class:`FormatRubric`): the cheap format-only path (parse, nothing else).

Every formula, weight and gate is written out once, in ``docs/rewards.md``; the code points there.
Rubrics are frozen dataclasses; grading keeps no state between calls.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers as _abc
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Protocol, cast

from dsa_cast.claims import EvalError, Limits, Verdict, VerdictRow, check_claim_rows, evaluate, verdict_from_row
from dsa_cast.lexicon import OPERAND, decimal_value
from dsa_cast.numbers import (
    DEFAULT_NUMBER_LIMITS,
    PERCENT_POLICIES,
    Extraction,
    NumberLimits,
    answers_match,
    extract_answer,
    extract_reference,
    format_value,
    numbers_in,
)
from dsa_cast.parse import (
    Code,
    Completion,
    Scan,
    Span,
    completion_from_scan,
    first_section_bodies,
    scan,
    scan_is_exact,
)
from dsa_cast.schema import DSA, Schema

__all__ = [
    "Grade",
    "Detail",
    "RubricCode",
    "Rubric",
    "FormatRubric",
    "DsaCastWeights",
    "DsaCastRubric",
    "SeedRubric",
    "RUBRICS",
    "DEFAULT_RUBRIC",
    "get_rubric",
    "resolve_rubric",
]


# --------------------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detail:
    """Everything a rubric looked at, for ``dsa-cast explain`` (only built when asked for).

    Attributes:
      parsed: the parsed completion (``None`` for the ``seed`` rubric, which does not parse).
      extraction: the answer-block extraction (``None`` without an answer block).
      reference: the exact reference value (``None`` without one, or unreadable for ``seed``).
      verdicts: the checked claims the rubric used (the Evidence section's for ``dsa-cast``,
        every ``CALC:`` line for ``seed``).
      scores: unweighted sub-scores and counts behind each component (names in docs/rewards.md).
    """

    parsed: Completion | None
    extraction: Extraction | None
    reference: Fraction | None
    verdicts: tuple[Verdict, ...]
    scores: Mapping[str, float] = field(hash=False)

    def __reduce__(self) -> tuple[Any, ...]:  # the read-only mapping does not pickle; rebuild it
        return (_detail, (self.parsed, self.extraction, self.reference, self.verdicts, dict(self.scores)))


@dataclass(frozen=True)
class Grade:
    """The result of grading one completion.

    Attributes:
      total: the reward; exactly ``sum(components.values())`` (summed in component order).
      components: each component's weighted contribution (read-only mapping, rubric order).
      correct: whether the final answer equals the reference; ``None`` without a reference (and
        always ``None`` for the ``format`` rubric).
      predicted: the extracted final answer as :func:`dsa_cast.numbers.format_value` text, or None.
      issues: issue codes (parse codes, the answer-extraction issue, rubric codes); empty when clean.
      max_total: the rubric's largest possible total.
      rubric: the rubric's name.
      detail: what the rubric looked at, when grading was asked for ``detail=True``.
    """

    total: float
    components: Mapping[str, float] = field(hash=False)
    correct: bool | None
    predicted: str | None
    issues: tuple[str, ...]
    max_total: float
    rubric: str = "dsa-cast"
    detail: Detail | None = field(default=None, compare=False, hash=False, repr=False)

    def __init__(
        self,
        total: float,
        components: Mapping[str, float],
        correct: bool | None,
        predicted: str | None,
        issues: tuple[str, ...],
        max_total: float,
        rubric: str = "dsa-cast",
        detail: Detail | None = None,
    ) -> None:
        # Written out (the dataclass keeps an __init__ defined here): the generated frozen one sets
        # each field through object.__setattr__, eight calls; one __dict__ update builds the same
        # object for a third of the cost, and every grade is built here. Same fields, same order.
        self.__dict__.update(
            total=total,
            components=components,
            correct=correct,
            predicted=predicted,
            issues=issues,
            max_total=max_total,
            rubric=rubric,
            detail=detail,
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable (multiprocessing workers return grades)
        return (
            _grade_from,
            (
                self.total,
                dict(self.components),
                self.correct,
                self.predicted,
                self.issues,
                self.max_total,
                self.rubric,
                self.detail,
            ),
        )


def _detail(
    parsed: Completion | None,
    extraction: Extraction | None,
    reference: Fraction | None,
    verdicts: tuple[Verdict, ...],
    scores: dict[str, float],
) -> Detail:
    return Detail(parsed, extraction, reference, verdicts, MappingProxyType(scores))


def _grade_from(
    total: float,
    components: dict[str, float],
    correct: bool | None,
    predicted: str | None,
    issues: tuple[str, ...],
    max_total: float,
    rubric: str,
    detail: Detail | None,
) -> Grade:
    return Grade(total, MappingProxyType(components), correct, predicted, issues, max_total, rubric, detail)


class RubricCode(enum.StrEnum):
    """Issue codes added by rubrics (parse codes are :class:`dsa_cast.parse.Code`)."""

    BOILERPLATE_SECTION = "boilerplate_section"  # too few distinct words, or only filler words
    COPIED_QUESTION = "copied_question"  # (almost) no word that is not in the question
    NO_CLAIMS = "no_claims"  # a non-empty Evidence section without a checkable claim
    FALSE_CLAIM = "false_claim"
    UNCHECKABLE_CLAIM = "uncheckable_claim"  # a claim the evaluator refused (syntax, limits)
    TRIVIAL_CLAIM = "trivial_claim"  # restates a number: "5 = 5", "16*1 = 16", "1+1 = 2"
    UNGROUNDED_CLAIM = "ungrounded_claim"  # true, but uses no number of the problem
    UNSUPPORTED_ANSWER = "unsupported_answer"  # answer neither in Reasoning nor a true claim's result
    SANITY_IGNORES_ANSWER = "sanity_ignores_answer"  # the Sanity_check never mentions the answer
    UNREADABLE_REFERENCE = "unreadable_reference"  # an adapter could not read the item's reference


def _grade(
    rubric: Rubric,
    parts: tuple[tuple[str, float], ...],
    correct: bool | None,
    predicted: str | None,
    issues: Iterable[str],
    detail: Detail | None,
) -> Grade:
    total = 0.0
    for _, value in parts:
        total += value
    return Grade(  # positional: keyword arguments cost more per grade
        total,
        MappingProxyType(dict(parts)),  # components
        correct,
        predicted,
        tuple(dict.fromkeys(map(str, issues))),  # plain str codes, first occurrence order
        rubric.max_total,
        rubric.name,
        detail,
    )


def _shown(value: object, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters; never raises (``repr`` of a 5,000-digit int
    does) and never builds a huge string first."""
    if isinstance(value, int) and value.bit_length() > 4 * width:
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, Fraction) and max(value.numerator.bit_length(), value.denominator.bit_length()) > 4 * width:
        return f"<Fraction of {max(value.numerator.bit_length(), value.denominator.bit_length())} bits>"
    try:
        shown = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _check_share(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}.{name} must be a number in [0, 1], got {value!r}")


def _check_weight(owner: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}.{name} must be a finite number >= 0, got {value!r}")


# --------------------------------------------------------------------------------------
# Base class.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rubric:
    """A named scoring rule. Subclasses define the fields (all documented defaults) and
    :meth:`score`; :attr:`components`, :attr:`min_total` and :attr:`max_total` describe the
    result. Instances are immutable and safe to share between threads."""

    name: str = "rubric"

    @property
    def components(self) -> tuple[str, ...]:
        """Component names, in the order :attr:`Grade.components` lists them."""
        raise NotImplementedError

    @property
    def min_total(self) -> float:
        raise NotImplementedError

    @property
    def max_total(self) -> float:
        raise NotImplementedError

    @property
    def component_minima(self) -> Mapping[str, float]:
        """Each component's lowest value (they sum to :attr:`min_total`); 0 unless overridden."""
        return {c: 0.0 for c in self.components}

    def score(self, text: str, answer: object = None, question: str | None = None, detail: bool = False) -> Grade:
        """Grade ``text`` against the reference ``answer`` (any form
        :func:`dsa_cast.numbers.extract_reference` reads; None = no reference)."""
        raise NotImplementedError

    def minimum_grade(self, *issues: str) -> Grade:
        """The lowest grade this rubric gives (every component at its minimum, ``correct`` None):
        what the RL adapters pay an item they cannot grade, e.g. one whose reference is unreadable
        (``on_error="min"``), tagged with ``issues``."""
        return _grade(self, tuple(self.component_minima.items()), None, None, issues, None)


# --------------------------------------------------------------------------------------
# The shared format component (dsa-cast and format rubrics).
# --------------------------------------------------------------------------------------


def _blocks_ok(r_spans: list[Span], a_spans: list[Span]) -> bool:
    """First reasoning block and first answer block both present, closed, in that order
    (spans as :func:`dsa_cast.parse.scan` lists them)."""
    if not r_spans or not a_spans:
        return False
    _, _, r_end, _, _, r_closed = r_spans[0]
    _, a_start, _, _, _, a_closed = a_spans[0]
    return r_closed and a_closed and r_end <= a_start


@dataclass(frozen=True)
class FormatRubric(Rubric):
    """Format only: ``weight`` x (1 if exact format, ``partial`` if both blocks are closed and in
    order, else 0). No answer extraction, no claims: ``correct`` and ``predicted`` are None.

    Attributes:
      schema: the output format.
      weight: the component's weight (its maximum).
      partial: share paid when the two blocks are well formed but the format is not exact.
    """

    name: str = "format"
    schema: Schema = DSA
    weight: float = 1.0
    partial: float = 0.5

    def __post_init__(self) -> None:
        _check_weight("FormatRubric", "weight", self.weight)
        _check_share("FormatRubric", "partial", self.partial)
        if not isinstance(self.schema, Schema):
            raise TypeError(f"FormatRubric.schema must be a Schema, got {type(self.schema).__name__}")

    @property
    def components(self) -> tuple[str, ...]:
        return ("format",)

    @property
    def min_total(self) -> float:
        return 0.0

    @property
    def max_total(self) -> float:
        return float(self.weight)

    def score(self, text: str, answer: object = None, question: str | None = None, detail: bool = False) -> Grade:
        scanned = scan(text, self.schema)
        r_spans, a_spans, _, _, found, _ = scanned
        issues = found.issues()
        if scan_is_exact(self.schema, scanned, issues):
            f = 1.0
        else:
            f = self.partial if _blocks_ok(r_spans, a_spans) else 0.0
        info = None
        if detail:
            info = Detail(
                completion_from_scan(text, self.schema, scanned), None, None, (), MappingProxyType({"format": f})
            )
        return _grade(self, (("format", self.weight * f),), None, None, issues, info)


# --------------------------------------------------------------------------------------
# dsa-cast: the hardened default.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DsaCastWeights:
    """Weights of the ``dsa-cast`` components (each component's unweighted score is in [0, 1],
    so a weight is that component's maximum). Correctness dominates: half of the total 10."""

    format: float = 1.0
    structure: float = 1.5
    correctness: float = 5.0
    evidence: float = 1.5
    coherence: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_weight("DsaCastWeights", f.name, getattr(self, f.name))

    @property
    def total(self) -> float:
        return self.format + self.structure + self.correctness + self.evidence + self.coherence


# Words of known filler sentences ("Double-check the result.", "The answer is reasonable.",
# "Solve the problem step by step.", "N/A", ...). A section whose every distinct word is in this
# vocabulary is boilerplate. Lower-case; see docs/rewards.md.
FILLER_WORDS: frozenset[str] = frozenset(
    """
    a about above accurate add addition all also am an and answer answers appropriate are arithmetic
    as at basic be by calculate calculation calculations can careful carefully check checked checks
    compute computed consistent correct correctly direct directly do does done double ensure
    everything final fine follow following for get given good i if impossible in information is it
    its just let like looks make makes math me n na need no none not nothing of ok okay on or out
    perform positive problem question reasonable result results s same sanity see seems sense should
    simple so solution solve step steps sure tbd that the then there this to todo use using valid
    value verified verify was we will with work works yes
    """.split()
)

_WORD = re.compile(r"[^\W_]++")
_OPERAND = re.compile(OPERAND)  # dsa_cast.lexicon: how it differs from the claim evaluator's literal
# The same literals for a long body: each match first skips the digit-free run before the next
# literal in one possessive C loop (about twice as fast as letting findall retry _OPERAND at
# every position); the group is '' for the final run after the last literal. Linear.
_SKIP_TO_OPERAND = re.compile(r"[^0-9]*+(" + _OPERAND.pattern + r")?+")
_EARLY_WORDS = 256  # words read one by one before _section_issue switches to one findall
_MAX_OPERAND_CHARS = 40  # operand literals longer than this are ignored for grounding
# What may follow an integer written in plain digits for it to be that integer: optional ".0…",
# then no further digit, comma group or decimal digits ("18", "18.00", "18." but not "180",
# "18,000" or "18.5"). See _mentions_int.
_INT_END = re.compile(r"(?:\.0++)?+(?![0-9]|,[0-9]{3}|\.[0-9])")
_DIGITS = frozenset("0123456789")
_OPERATOR_LEFT = frozenset("0123456789)]}abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


_MENTION_TRIES = 16  # occurrences _mentions_int checks one by one before one regex search in C


def _mention_pattern(s: str) -> re.Pattern[str]:
    """The occurrences of ``s`` (digits, maybe comma-grouped) that :func:`_mentions_int` accepts,
    as one pattern: the literal first (so the engine skips to candidates), then lookbehinds over it
    for what may not precede it, then what may not follow it."""
    lit = re.escape(s)
    return re.compile(
        rf"{lit}(?<![0-9.]{lit})(?<![0-9],{lit})(?<!(?<![0-9A-Za-z)\]}}])[-\u2212]{lit})" + _INT_END.pattern
    )


def _mentions_int(body: str, t: int) -> bool:
    """Whether ``body`` writes the non-negative integer ``t`` in plain digits, optionally
    comma-grouped and with zero decimals (``1234``, ``1,234``, ``$1,234.00``), not negative
    (a ``-``/``−`` right before it that is not an operator after a letter, digit or bracket)
    and not part of a longer number. Linear: ``str.find`` per occurrence, and after
    ``_MENTION_TRIES`` rejected ones (``1`` in a 90,000-digit run) one regex search in C."""
    for s in {str(t), f"{t:,}"}:
        k = body.find(s)
        tries = 0
        while k >= 0:
            c = body[k - 1] if k else " "
            ok = c not in _DIGITS and c != "." and not (c == "," and k >= 2 and body[k - 2] in _DIGITS)
            if ok and c in "-\u2212":
                ok = k >= 2 and body[k - 2] in _OPERATOR_LEFT  # "16-18" subtracts; " -18" is negative
            if ok and _INT_END.match(body, k + len(s)) is not None:
                return True
            tries += 1
            if tries == _MENTION_TRIES:
                if _mention_pattern(s).search(body, k + 1) is not None:
                    return True
                break
            k = body.find(s, k + 1)
    return False


# Number words that ground claims like the digits they stand for ("three eggs" grounds
# "CALC: 3 + 4 = 7"). Lower-case word -> values (a multiplier word stands for its factor).
NUMBER_WORDS: Mapping[str, tuple[int | Fraction, ...]] = MappingProxyType(
    {
        **{
            w: (i,)
            for i, w in enumerate(
                "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                "fifteen sixteen seventeen eighteen nineteen twenty".split()
            )
        },
        **{w: (10 * i,) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), start=3)},
        "hundred": (100,),
        "thousand": (1000,),
        "million": (1_000_000,),
        "dozen": (12,),
        "half": (Fraction(1, 2), 2),
        "quarter": (Fraction(1, 4), 4),
        "third": (Fraction(1, 3), 3),
        "twice": (2,),
        "double": (2,),
        "triple": (3,),
        "thrice": (3,),
        "once": (1,),
        "percent": (100,),
    }
)


def _word_values(words: Iterable[str]) -> set[int | Fraction]:
    out: set[int | Fraction] = set()
    for w in words:
        vals = NUMBER_WORDS.get(w)
        if vals:
            out.update(vals)
    return out


_operand_value = decimal_value  # exact value of one _OPERAND match (int when whole)


def _operands(text: str) -> list[int | Fraction]:
    """Unsigned decimal literals in an expression (``1,234`` and ``1.5`` included), in order.
    Plain digit runs (the common case) are converted inline by ``int``."""
    return [
        (int(s) if s.isdigit() else _operand_value(s)) for s in _OPERAND.findall(text) if len(s) <= _MAX_OPERAND_CHARS
    ]


def _operand_set(*texts: str) -> set[int | Fraction]:
    """The distinct values of :func:`_operands` over ``texts`` (each distinct spelling
    converted once)."""
    spelled: set[str] = set()
    for text in texts:
        spelled.update(_SKIP_TO_OPERAND.findall(text))
    spelled.discard("")
    return {(int(s) if s.isdigit() else _operand_value(s)) for s in spelled if len(s) <= _MAX_OPERAND_CHARS}


_UNSOUND = frozenset(
    {
        Code.MISSING_REASONING,
        Code.UNCLOSED_REASONING,
        Code.MISSING_ANSWER,
        Code.UNCLOSED_ANSWER,
        Code.DUPLICATE_ANSWER,
        Code.ANSWER_BEFORE_REASONING,
        Code.NESTED_TAG,
        Code.TRUNCATED,
        Code.DUPLICATE_SECTION,
        Code.SECTION_OUT_OF_ORDER,
    }
)
_STRUCTURE_VOID = frozenset({Code.DUPLICATE_SECTION, Code.NESTED_TAG})
_ANSWER_DISQUALIFIERS = frozenset({Code.MISSING_ANSWER, Code.UNCLOSED_ANSWER, Code.DUPLICATE_ANSWER})


@dataclass(frozen=True)
class DsaCastRubric(Rubric):
    """The hardened DSA-CAST rubric (formulas in docs/rewards.md, section "dsa-cast").

    Attributes:
      schema: the output format (tags and section names).
      weights: component weights (:class:`DsaCastWeights`; a mapping is accepted too).
      percent: percent policy for :func:`dsa_cast.numbers.answers_match` ("either", "number",
        "fraction").
      partial_credit: pay ``near_share`` / ``malformed_share`` of the correctness weight (off).
      near_tolerance: relative distance |v - ref| <= near_tolerance * |ref| that counts as "near".
      near_share: correctness share of a well-formed wrong answer that is near the reference.
      malformed_share: correctness share of a right value in a disqualified answer block
        (unclosed, or a second answer block). Must be >= ``near_share``: a wrong answer never
        earns more than a malformed correct one.
      format_partial: format share when both blocks are closed and in order but not exact.
      min_section_words: a section needs at least this many distinct words to count.
      min_novel_words: with a question, a section needs this many distinct words not in it.
      section_scan_chars: the word checks read only a section body's first this many characters
        (a word cut at that point is not read); bounds the work on 200 KB hostile sections.
      filler_words: vocabulary of filler sentences; a section of only these words is boilerplate.
      out_of_order_factor: structure multiplier when sections are out of order.
      unsound_factor: evidence and coherence multiplier when the completion is not sound (the
        invariants in docs/rewards.md are proved for the default 0).
      unsound_codes: parse codes that make a completion unsound.
      structure_void_codes: parse codes that zero the structure component.
      answer_disqualifiers: parse codes under which the answer block cannot be correct.
      support_share: coherence share for "the answer is supported" (rest: "sanity check refers").
      evidence_section / reasoning_section / sanity_section: section names playing those roles.
      grounding_sections: sections whose numbers ground claims when no question is given.
      limits: claim-checking limits (:class:`dsa_cast.claims.Limits`).
      number_limits: number-reading limits (:class:`dsa_cast.numbers.NumberLimits`).
    """

    name: str = "dsa-cast"
    schema: Schema = DSA
    weights: DsaCastWeights = DsaCastWeights()
    percent: str = "either"
    partial_credit: bool = False
    near_tolerance: Fraction = Fraction(1, 10)
    near_share: float = 0.25
    malformed_share: float = 0.5
    format_partial: float = 0.5
    min_section_words: int = 3
    min_novel_words: int = 2
    section_scan_chars: int = 16384
    filler_words: frozenset[str] = FILLER_WORDS
    out_of_order_factor: float = 0.5
    unsound_factor: float = 0.0
    unsound_codes: frozenset[str] = _UNSOUND
    structure_void_codes: frozenset[str] = _STRUCTURE_VOID
    answer_disqualifiers: frozenset[str] = _ANSWER_DISQUALIFIERS
    support_share: float = 0.5
    evidence_section: str = "Evidence"
    reasoning_section: str = "Reasoning"
    sanity_section: str = "Sanity_check"
    grounding_sections: tuple[str, ...] = ("Plan", "Reasoning")
    limits: Limits = Limits()
    number_limits: NumberLimits = DEFAULT_NUMBER_LIMITS

    def __post_init__(self) -> None:
        own = "DsaCastRubric"
        if isinstance(self.weights, Mapping):
            object.__setattr__(self, "weights", DsaCastWeights(**self.weights))
        if not isinstance(self.weights, DsaCastWeights):
            raise TypeError(f"{own}.weights must be DsaCastWeights or a mapping, got {type(self.weights).__name__}")
        if not isinstance(self.schema, Schema):
            raise TypeError(f"{own}.schema must be a Schema, got {type(self.schema).__name__}")
        if self.percent not in PERCENT_POLICIES:
            raise ValueError(f"{own}.percent must be one of {PERCENT_POLICIES}, got {self.percent!r}")
        if not isinstance(self.partial_credit, bool):
            raise ValueError(f"{own}.partial_credit must be a bool, got {self.partial_credit!r}")
        tol = self.near_tolerance
        if isinstance(tol, bool) or not isinstance(tol, (int, float, Fraction)) or not 0 <= tol < 1:
            raise ValueError(f"{own}.near_tolerance must be in [0, 1), got {tol!r}")
        object.__setattr__(self, "near_tolerance", Fraction(tol))
        for name in (
            "near_share",
            "malformed_share",
            "format_partial",
            "out_of_order_factor",
            "unsound_factor",
            "support_share",
        ):
            _check_share(own, name, getattr(self, name))
        if self.near_share > self.malformed_share:
            raise ValueError(
                f"{own}.near_share ({self.near_share}) must not exceed malformed_share "
                f"({self.malformed_share}): a wrong answer must never earn more than a "
                "malformed correct one"
            )
        w = self.weights
        if w.correctness * (1.0 - self.near_share) <= w.coherence:
            raise ValueError(
                f"{own}: weights.correctness * (1 - near_share) must exceed "
                "weights.coherence, or turning a right answer wrong could raise the total"
            )
        for name in ("min_section_words", "min_novel_words", "section_scan_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{own}.{name} must be an int >= 1, got {value!r}")
        for name in ("filler_words", "unsound_codes", "structure_void_codes", "answer_disqualifiers"):
            object.__setattr__(self, name, frozenset(getattr(self, name)))
        for name in ("evidence_section", "reasoning_section", "sanity_section"):
            if getattr(self, name) not in self.schema.sections:
                raise ValueError(
                    f"{own}.{name} {getattr(self, name)!r} is not one of the schema's sections {self.schema.sections}"
                )
        object.__setattr__(self, "grounding_sections", tuple(self.grounding_sections))
        for s in self.grounding_sections:
            if s not in self.schema.sections:
                raise ValueError(
                    f"{own}.grounding_sections: {s!r} is not one of the schema's sections {self.schema.sections}"
                )
        if not isinstance(self.limits, Limits):
            raise TypeError(f"{own}.limits must be a claims.Limits, got {type(self.limits).__name__}")

    @property
    def components(self) -> tuple[str, ...]:
        return ("format", "structure", "correctness", "evidence", "coherence")

    @property
    def min_total(self) -> float:
        return 0.0

    @property
    def max_total(self) -> float:
        return self.weights.total

    # -- pieces ------------------------------------------------------------------------

    def _section_issue(self, body: str, question_words: frozenset[str] | None) -> str | None:
        """None when the section body is substantive, else the reason (a RubricCode).

        Only the *set* of distinct words matters, so repeating text or adding whitespace never
        changes the verdict. Reads word by word and stops as soon as the body qualifies; after
        ``_EARLY_WORDS`` words without a verdict (hostile repetition) the distinct words are
        collected by one C-level ``findall`` instead, with the same result."""
        seen: set[str] = set()
        outside_filler = False
        novel = 0
        need_novel = 0 if question_words is None else self.min_novel_words
        qwords = question_words or frozenset()  # read only while novel < need_novel: never when None
        filler = self.filler_words
        need_words = self.min_section_words
        # Only the first section_scan_chars characters are read, and never a word cut there.
        end = min(len(body), self.section_scan_chars)
        cut = end < len(body) and body[end - 1].isalnum() and body[end].isalnum()
        for k, m in enumerate(_WORD.finditer(body, 0, end)):
            if k >= _EARLY_WORDS:  # hostile repetition: collect the distinct words in C
                words = _WORD.findall(body, 0, end)
                if cut:
                    words.pop()
                seen = set(map(str.lower, set(words)))
                outside_filler = not seen <= filler
                novel = len(seen - question_words) if question_words is not None else 0
                if outside_filler and novel >= need_novel and len(seen) >= need_words:
                    return None
                break
            if cut and m.end() == end:
                break
            w = m.group().lower()
            if w in seen:
                continue
            seen.add(w)
            if not outside_filler and w not in filler:
                outside_filler = True
            if novel < need_novel and w not in qwords:
                novel += 1
            if outside_filler and novel >= need_novel and len(seen) >= need_words:
                return None
        if len(seen) < need_words or not outside_filler:
            return RubricCode.BOILERPLATE_SECTION
        return RubricCode.COPIED_QUESTION

    def _grounding(
        self, first: Mapping[str, str], question: str | None, question_words: frozenset[str] | None
    ) -> set[int | Fraction]:
        """Numbers a claim may start from: the question's (digits and number words), or without
        a question the decimal literals of the ``grounding_sections``."""
        if question is not None:
            return _operand_set(question) | _word_values(question_words or ())
        return _operand_set(*[first[name] for name in self.grounding_sections if name in first])

    @staticmethod
    def _mentions(body: str, targets: tuple[int | Fraction, ...]) -> bool:
        """Whether ``body`` writes a number equal to one of ``targets``: a non-negative integer
        as plain digits (:func:`_mentions_int`, fast), any other value as a literal that
        :func:`dsa_cast.numbers.numbers_in` reads."""
        rest = []
        for t in targets:
            if type(t) is int and t >= 0:  # the rubric passes whole values as int (cheaper)
                if _mentions_int(body, t):
                    return True
            elif type(t) is not int and t.denominator == 1 and t >= 0:
                if _mentions_int(body, int(t)):
                    return True
            else:
                rest.append(t)
        if rest:
            for value, _, _ in numbers_in(body):
                if value in rest:
                    return True
        return False

    def reference_value(self, answer: object) -> Fraction | None:
        """The exact reference (:func:`dsa_cast.numbers.extract_reference`); ValueError when
        ``answer`` holds no single number, TypeError for an unsupported type."""
        if answer is None:
            return None
        ref = extract_reference(answer, self.number_limits)
        if ref is None:
            shown = _shown(answer)
            if isinstance(answer, str):
                raise ValueError(f"answer {shown} has no single numeric value to grade against")
            raise ValueError(
                f"answer {shown} is not a finite number of at most "
                f"{self.number_limits.max_value_bits} bits (numerator and denominator)"
            )
        return ref

    # -- scoring -----------------------------------------------------------------------

    def score(self, text: str, answer: object = None, question: str | None = None, detail: bool = False) -> Grade:
        ref = self.reference_value(answer)
        w = self.weights
        schema = self.schema
        scanned = scan(text, schema)  # plain spans and lists; a Completion only for detail
        r_spans, a_spans, inside, hi, found, _ = scanned
        parse_issues = found.issues()
        issues: list[str] = list(parse_issues)
        codes = frozenset(parse_issues)
        a = a_spans[0] if a_spans else None
        reasoning = r_spans[0] if r_spans else None

        # format
        blocks_ok = _blocks_ok(r_spans, a_spans)
        exact = scan_is_exact(schema, scanned, parse_issues)
        fmt = 1.0 if exact else (self.format_partial if blocks_ok else 0.0)
        sound = blocks_ok and codes.isdisjoint(self.unsound_codes)
        gate = 1.0 if sound else self.unsound_factor

        # answer and correctness
        ex = extract_answer(text[a[3] : a[4]], self.number_limits) if a is not None else None
        if ex is not None and ex.issue is not None:
            issues.append(ex.issue)
        value = ex.value if ex is not None and ex.issue is None else None
        percent = ex is not None and ex.percent
        predicted = format_value(value, self.number_limits) if value is not None else None
        answer_ok = a is not None and codes.isdisjoint(self.answer_disqualifiers)
        correct, corr = self._correctness(ex, ref, value, percent, answer_ok)

        first = first_section_bodies(text, schema, inside, hi)  # name -> body of its first section
        qwords = frozenset(_WORD.findall(question.lower())) if question is not None else None
        struct, ok_sections = self._structure(first, reasoning is not None, codes, qwords, issues)
        evid, n_claims, credited, results, distinct = self._evidence(first, question, qwords, issues)
        coh, supported, refers = self._coherence(first, value, percent, reasoning is not None, results, issues)

        parts = (
            ("format", w.format * fmt),
            ("structure", w.structure * struct),
            ("correctness", w.correctness * corr),
            ("evidence", w.evidence * evid * gate),
            ("coherence", w.coherence * coh * gate),
        )
        info = None
        if detail:
            counts = (sound, ok_sections, n_claims, credited, supported, refers)
            info = self._detail(text, scanned, ex, ref, distinct, (fmt, struct, corr, evid, coh), counts)
        return _grade(self, parts, correct, predicted, issues, info)

    def _detail(
        self,
        text: str,
        scanned: Scan,
        ex: Extraction | None,
        ref: Fraction | None,
        distinct: Mapping[tuple[str, str], VerdictRow],
        components: tuple[float, float, float, float, float],
        counts: tuple[float, float, float, float, float, float],
    ) -> Detail:
        """The :class:`Detail` of one grade: the unweighted ``components`` (format, structure,
        correctness, evidence, coherence) and the ``counts`` behind them (sound, sections_ok, claims,
        claims_credited, supported, sanity_refers; as floats)."""
        scores = dict(zip(("format", "structure", "correctness", "evidence", "coherence"), components, strict=True))
        names = ("sound", "sections_ok", "claims", "claims_credited", "supported", "sanity_refers")
        scores.update(zip(names, map(float, counts), strict=True))
        return Detail(
            completion_from_scan(text, self.schema, scanned),
            ex,
            ref,
            tuple(map(verdict_from_row, distinct.values())),
            MappingProxyType(scores),
        )

    # -- components (each appends its issue codes to ``issues``, in component order) ----------

    def _correctness(
        self, ex: Extraction | None, ref: Fraction | None, value: Fraction | None, percent: bool, answer_ok: bool
    ) -> tuple[bool | None, float]:
        """``(correct, unweighted score)``: the extracted answer against the reference."""
        if ref is None:
            return None, 0.0
        match = ex is not None and answers_match(ex, ref, percent=self.percent)
        correct = match and answer_ok
        corr = 1.0 if correct else 0.0
        if not correct and self.partial_credit:
            if match:
                corr = self.malformed_share
            elif answer_ok and value is not None and ref != 0:
                cands = (value, value * 100) if percent else (value,)
                if any(abs(v - ref) <= self.near_tolerance * abs(ref) for v in cands):
                    corr = self.near_share
        return correct, corr

    def _structure(
        self,
        first: Mapping[str, str],
        has_reasoning: bool,
        codes: frozenset[str],
        qwords: frozenset[str] | None,
        issues: list[str],
    ) -> tuple[float, int]:
        """``(unweighted score, sections that count)``: substantive sections of the first reasoning block."""
        if not has_reasoning or not codes.isdisjoint(self.structure_void_codes):
            return 0.0, 0
        ok_sections = 0
        for name in self.schema.sections:
            body = first.get(name)
            if not body:
                continue  # missing_section / empty_section already reported by the parser
            why = self._section_issue(body, qwords)
            if why is None:
                ok_sections += 1
            else:
                issues.append(why)
        struct = ok_sections / len(self.schema.sections)
        if Code.SECTION_OUT_OF_ORDER in codes:
            struct *= self.out_of_order_factor
        return struct, ok_sections

    def _evidence(
        self, first: Mapping[str, str], question: str | None, qwords: frozenset[str] | None, issues: list[str]
    ) -> tuple[float, int, int, set[int | Fraction], dict[tuple[str, str], VerdictRow]]:
        """``(unweighted score, distinct claims, credited claims, their results, the distinct
        claims' checks)``: the Evidence section's claims, checked, grounded and deduplicated."""
        ev_body = first.get(self.evidence_section, "")
        # Internal rows (claim, ok, value, stated_value, reason), claim = (kind, expr, stated,
        # start, end): the same checks as check_claims, without a dataclass per claim.
        rows = check_claim_rows(ev_body, self.limits) if ev_body else ()
        distinct: dict[tuple[str, str], VerdictRow] = {}
        for row in rows:
            claim = row[0]
            distinct.setdefault(("".join(claim[1].split()), "".join(claim[2].split())), row)
        n_claims = len(distinct)
        credited = 0
        results: set[int | Fraction] = set()  # results of credited claims (they support the answer)
        if not n_claims:
            if ev_body:
                issues.append(RubricCode.NO_CLAIMS)
            return 0.0, 0, 0, results, distinct
        allowed: set[int | Fraction] | None = None
        for claim, ok, _, sv, _ in distinct.values():
            if ok is True:
                ops = _operands(claim[1])
                core = [o for o in ops if o != 0 and o != 1]
                if len(ops) < 2 or not core or (len(core) == 1 and sv == core[0]):
                    issues.append(RubricCode.TRIVIAL_CLAIM)
                    continue
                if allowed is None:
                    allowed = self._grounding(first, question, qwords)
                if allowed.isdisjoint(ops):
                    issues.append(RubricCode.UNGROUNDED_CLAIM)
                    continue
                credited += 1
                if sv is not None:
                    sv = sv.numerator if sv.denominator == 1 else sv  # int: cheaper to hash
                    allowed.add(sv if sv >= 0 else -sv)  # abs(), typed
                    results.add(sv)
            elif ok is False:
                issues.append(RubricCode.FALSE_CLAIM)
            else:
                issues.append(RubricCode.UNCHECKABLE_CLAIM)
        return credited / n_claims, n_claims, credited, results, distinct

    def _coherence(
        self,
        first: Mapping[str, str],
        value: Fraction | None,
        percent: bool,
        has_reasoning: bool,
        results: set[int | Fraction],
        issues: list[str],
    ) -> tuple[float, bool, bool]:
        """``(unweighted score, supported, sanity refers)``: the answer backed by a credited claim
        or named in Reasoning, and named in Sanity_check."""
        supported = refers = False
        if value is not None and has_reasoning:
            v = value.numerator if value.denominator == 1 else value  # int: cheaper to hash
            targets = (v, v * 100) if percent else (v,)
            supported = any(t in results for t in targets)
            if not supported:
                rs = first.get(self.reasoning_section)
                supported = rs is not None and self._mentions(rs, targets)
            sc = first.get(self.sanity_section)
            refers = sc is not None and self._mentions(sc, targets)
            if not supported:
                issues.append(RubricCode.UNSUPPORTED_ANSWER)
            if not refers:
                issues.append(RubricCode.SANITY_IGNORES_ANSWER)
        return self.support_share * supported + (1.0 - self.support_share) * refers, supported, refers


# --------------------------------------------------------------------------------------
# seed: the original notebook's reward, reproduced (linear time, safe evaluator).
# --------------------------------------------------------------------------------------


class _AlwaysMatches(Protocol):
    """A pattern that matches (maybe empty) at every position: ``match`` never returns None."""

    def match(self, string: str, pos: int = ..., endpos: int = ...) -> re.Match[str]: ...


_WS_RUN = cast(_AlwaysMatches, re.compile(r"\s*+"))


@dataclass(frozen=True)
class CastTerms:
    """The seed's CAST score and its terms for one completion (docs/rewards.md, "seed")."""

    cast: float  # w_accuracy*accuracy + w_completeness*completeness + w_format_bonus*format_bonus + w_calc*calc
    accuracy: float  # 1 / near_credit / far_credit / 0
    completeness: float  # (headings_present + headings_in_order + length) / 3
    headings_present: float  # share of headings found anywhere in the text
    headings_in_order: float  # 1.0 when all are present and their first occurrences are in order
    length: float  # min(1, len(reasoning body) / length_target_chars)
    format_bonus: float  # 1 / tags_only_bonus / 0
    calc_consistency: float  # share of CALC lines whose sides are equal (0 without any)
    positions: tuple[int, ...]  # first index of each heading, -1 when absent
    has_reasoning: bool  # a reasoning tag pair
    has_answer: bool  # an answer tag pair
    raw: str | None  # the answer number as written
    gold: float | None  # the reference as the notebook read it
    calc_rows: tuple[tuple[str, str, bool], ...]  # (left, right, equal) per CALC line


# The notebook's "####" number and "first number" patterns, applied at one position each.
_HASH_NUMBER = re.compile(r"[-+]?+([\d,]*+)(\.\d++)?+")
_FIRST_NUMBER = re.compile(r"[-+]?+\d[\d,]*+(?:\.\d++)?+")


@dataclass(frozen=True)
class SeedRubric(Rubric):
    """The original notebook's three reward functions, summed (docs/rewards.md, section "seed").

    Quirks kept on purpose (compatibility mode): headings are found anywhere in the text (even in
    the answer block), the answer is the ``####`` number or else the *first* number of the answer
    block, compared as binary floats with ratio partial credit, and the reasoning length earns
    completeness. Fixed on purpose: every scan is linear, and ``CALC:`` sides go through the safe
    bounded evaluator (:func:`dsa_cast.claims.evaluate`), never a computer-algebra parser.

    Attributes:
      schema: tag names and headings (``<tag>`` and ``Name:`` literals, case-sensitive).
      exact_format: reward_format_exact's reward for the exact layout.
      tag_pair: reward_format_soft's +/- for each tag pair.
      heading: reward_format_soft's +/- for each heading.
      heading_order: reward_format_soft's +/- for the heading order (only when all are present).
      w_accuracy, w_completeness, w_format_bonus, w_calc: the CAST weights (3, 2, 1, 1).
      near_band / near_credit: accuracy credit when lo <= pred/ref <= hi (closed; [0.9, 1.1] -> 0.5).
      far_band / far_credit: accuracy credit when lo <= pred/ref <= hi ([0.8, 1.2] -> 0.25).
      length_target_chars: completeness length term = min(1, len(reasoning body) / this).
      tags_only_bonus: format bonus when both tag pairs are present but headings are not in order.
      calc_marker: the marker of a checkable calculation line.
      limits: evaluator limits for the ``CALC:`` sides.
      max_predicted_chars: ``Grade.predicted`` is None for a number longer than this (display only).
      max_calc_lines: at most this many ``CALC:`` lines are checked, the first ones (the share is
        over them); the notebook's completions hold a handful, and each line costs an exact
        evaluation, so thousands of hostile lines stop costing time here.
    """

    name: str = "seed"
    schema: Schema = DSA
    exact_format: float = 3.0
    tag_pair: float = 1.0
    heading: float = 0.75
    heading_order: float = 1.0
    w_accuracy: float = 3.0
    w_completeness: float = 2.0
    w_format_bonus: float = 1.0
    w_calc: float = 1.0
    near_band: tuple[float, float] = (0.9, 1.1)
    near_credit: float = 0.5
    far_band: tuple[float, float] = (0.8, 1.2)
    far_credit: float = 0.25
    length_target_chars: int = 300
    tags_only_bonus: float = 0.5
    calc_marker: str = "CALC:"
    limits: Limits = Limits()
    max_predicted_chars: int = 100
    max_calc_lines: int = 512

    def __post_init__(self) -> None:
        own = "SeedRubric"
        if not isinstance(self.schema, Schema):
            raise TypeError(f"{own}.schema must be a Schema, got {type(self.schema).__name__}")
        for name in (
            "exact_format",
            "tag_pair",
            "heading",
            "heading_order",
            "w_accuracy",
            "w_completeness",
            "w_format_bonus",
            "w_calc",
        ):
            _check_weight(own, name, getattr(self, name))
        for name in ("near_band", "far_band"):
            band = tuple(getattr(self, name))
            if (
                len(band) != 2
                or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in band)
                or band[0] > band[1]
            ):
                raise ValueError(f"{own}.{name} must be a pair lo <= hi of finite numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, band)
        for name in ("near_credit", "far_credit", "tags_only_bonus"):
            _check_share(own, name, getattr(self, name))
        if not isinstance(self.length_target_chars, int) or self.length_target_chars < 1:
            raise ValueError(f"{own}.length_target_chars must be an int >= 1, got {self.length_target_chars!r}")
        if not isinstance(self.calc_marker, str) or not self.calc_marker:
            raise ValueError(f"{own}.calc_marker must be a non-empty str, got {self.calc_marker!r}")
        for name in ("max_predicted_chars", "max_calc_lines"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{own}.{name} must be an int >= 1, got {value!r}")

    # Tag and heading literals (derived from the schema; cheap).
    @property
    def _r_open(self) -> str:
        return f"<{self.schema.reasoning_tag}>"

    @property
    def _r_close(self) -> str:
        return f"</{self.schema.reasoning_tag}>"

    @property
    def _a_open(self) -> str:
        return f"<{self.schema.answer_tag}>"

    @property
    def _a_close(self) -> str:
        return f"</{self.schema.answer_tag}>"

    @property
    def _headings(self) -> tuple[str, ...]:
        return tuple(f"{s}:" for s in self.schema.sections)

    @property
    def components(self) -> tuple[str, ...]:
        return ("format_exact", "format_soft", "cast")

    @property
    def _soft_max(self) -> float:
        return 2 * self.tag_pair + len(self.schema.sections) * self.heading + self.heading_order

    @property
    def _soft_min(self) -> float:
        # The order term only applies when every heading is present (+heading each), so the
        # lowest reachable score has all tags and headings missing.
        n = len(self.schema.sections)
        return -2 * self.tag_pair + min(-n * self.heading, n * self.heading - self.heading_order)

    @property
    def min_total(self) -> float:
        return self._soft_min

    @property
    def component_minima(self) -> Mapping[str, float]:
        return {"format_exact": 0.0, "format_soft": self._soft_min, "cast": 0.0}

    @property
    def max_total(self) -> float:
        cast = self.w_accuracy + self.w_completeness + self.w_format_bonus + self.w_calc
        return self.exact_format + self._soft_max + cast

    # -- the notebook's pieces, each linear in the text ---------------------------------

    @staticmethod
    def _block(text: str, open_tag: str, close_tag: str) -> str | None:
        """Body of the first ``open .*? close`` (DOTALL), or None: the notebook's block regex."""
        i = text.find(open_tag)
        if i < 0:
            return None
        j = text.find(close_tag, i + len(open_tag))
        return None if j < 0 else text[i + len(open_tag) : j]

    def format_exact_ok(self, text: str) -> bool:
        """Whether ``^\\s*<reasoning>\\s*Plan:.*?Reasoning:.*?Evidence:.*?Sanity_check:.*?
        </reasoning>\\s*<answer>.*?</answer>\\s*$`` (DOTALL) matches, decided in linear time."""
        heads = self._headings
        p = _WS_RUN.match(text).end()
        if not text.startswith(self._r_open, p):
            return False
        p = _WS_RUN.match(text, p + len(self._r_open)).end()
        if not text.startswith(heads[0], p):
            return False
        p += len(heads[0])
        for h in heads[1:]:  # earliest matches: the lazy gaps accept anything in between
            k = text.find(h, p)
            if k < 0:
                return False
            p = k + len(h)
        end = len(text.rstrip())
        last = end - len(self._a_close)
        if last < p or not text.startswith(self._a_close, last):
            return False
        r_close, a_open = self._r_close, self._a_open
        k = text.find(r_close, p)
        while k >= 0:  # earliest "</reasoning>\s*<answer>" after the headings
            j = _WS_RUN.match(text, k + len(r_close)).end()
            if text.startswith(a_open, j):
                return j + len(a_open) <= last
            k = text.find(r_close, k + 1)
        return False

    def _positions(self, text: str) -> list[int]:
        return [text.find(h) for h in self._headings]

    @staticmethod
    def _in_order(pos: list[int]) -> bool:
        return all(p >= 0 for p in pos) and all(a < b for a, b in pairwise(pos))

    def format_soft_score(self, text: str) -> float:
        """reward_format_soft: tag pairs, headings and (all present) their order."""
        score = self.tag_pair if self._block(text, self._r_open, self._r_close) is not None else -self.tag_pair
        score += self.tag_pair if self._block(text, self._a_open, self._a_close) is not None else -self.tag_pair
        pos = self._positions(text)
        for p in pos:
            score += self.heading if p >= 0 else -self.heading
        if all(p >= 0 for p in pos):
            score += self.heading_order if self._in_order(pos) else -self.heading_order
        return score

    @staticmethod
    def _float(s: str) -> float | None:
        try:
            return float(s.replace(",", ""))
        except (ValueError, OverflowError):
            return None

    def predicted_text(self, text: str) -> str | None:
        """The notebook's answer: in the first answer block, the number after ``####`` if any,
        else the first number (``[-+]?\\d[\\d,]*(?:\\.\\d+)?``), as written."""
        body = self._block(text, self._a_open, self._a_close)
        if body is None:
            return None
        # "####\s*([-+]?[\d,]*\.?\d+)": the first "####" (end of a run of '#') followed by one.
        k = body.find("####")
        while k >= 0:
            e = k + 4
            while e < len(body) and body[e] == "#":
                e += 1
            s = _WS_RUN.match(body, e).end()
            m = _HASH_NUMBER.match(body, s)
            if m is not None:
                run, frac = m.group(1), m.group(2)
                if frac is not None:  # [\d,]* "." \d+
                    return m.group()
                digits_end = len(run.rstrip(","))
                if digits_end:  # backtracking: \d+ ends at the run's last digit
                    return m.group()[: m.start(1) - m.start() + digits_end]
            k = body.find("####", e)
        m = _FIRST_NUMBER.search(body)
        return None if m is None else m.group()

    def _gold(self, answer: object) -> float | None:
        """The notebook's reference: ``str(answer)``, the part after ``####`` if any, as float
        (``None`` when that text is no number, as the notebook's ``float()`` failed). Only a
        ``str`` or a real number is a reference (TypeError for others); one that is not a finite
        float (``"nan"``, ``"inf"``, ``10**5000``) is a ValueError."""
        if answer is None:
            return None
        if isinstance(answer, str):
            s = answer
            if "####" in s:
                s = s.split("####")[-1]
            gold = self._float(s.strip())
        elif isinstance(answer, (_abc.Real, Decimal)) and not isinstance(answer, bool):
            try:
                gold = float(answer)
            except (OverflowError, ValueError):
                gold = math.inf
        else:
            raise TypeError(f"reference must be a number or str, got {type(answer).__name__}")
        if gold is not None and not math.isfinite(gold):
            raise ValueError(f"reference {_shown(answer)} is not a finite number (as a float)")
        return gold

    def accuracy(self, pred: float | None, gold: float | None) -> float:
        """1 if equal, ``near_credit`` / ``far_credit`` when pred/ref is within the ratio bands
        (binary floats, as the notebook compared them)."""
        if pred is None or gold is None:
            return 0.0
        if pred == gold:
            return 1.0
        if gold == 0:
            return 0.0
        ratio = pred / gold
        if self.near_band[0] <= ratio <= self.near_band[1]:
            return self.near_credit
        if self.far_band[0] <= ratio <= self.far_band[1]:
            return self.far_credit
        return 0.0

    def calc_lines(self, text: str) -> list[tuple[str, str]]:
        """``(left, right)`` of the first ``max_calc_lines`` lines holding ``CALC: left = right``
        (first marker of a line, split at the line's first ``=``; both sides stripped and non-empty)."""
        out: list[tuple[str, str]] = []
        # One C-level scan: each match takes the rest of its line, so only a line's first
        # marker counts.
        for seg in re.findall(re.escape(self.calc_marker) + "([^\n]*)", text):
            left, eq, right = seg.partition("=")
            if eq:
                left, right = left.strip(), right.strip()
                if left and right:
                    out.append((left, right))
                    if len(out) >= self.max_calc_lines:
                        break
        return out

    def _calc_verdicts(self, text: str) -> tuple[list[tuple[str, str, bool]], float]:
        memo: dict[str, Fraction | None] = {}
        pairs: dict[tuple[str, str], bool] = {}  # repeated lines are checked once

        def value(side: str) -> Fraction | None:
            if side not in memo:
                try:
                    memo[side] = evaluate(side, self.limits)
                except EvalError:
                    memo[side] = None
            return memo[side]

        rows = []
        for pair in self.calc_lines(text):
            ok = pairs.get(pair)
            if ok is None:
                lv = value(pair[0])
                rv = value(pair[1]) if lv is not None else None
                ok = pairs[pair] = lv is not None and rv is not None and lv == rv
            rows.append((pair[0], pair[1], ok))
        share = sum(ok for _, _, ok in rows) / len(rows) if rows else 0.0
        return rows, share

    def cast_terms(self, text: str, answer: object = None) -> CastTerms:
        """The CAST score and every term behind it (names as in docs/rewards.md)."""
        pos = self._positions(text)
        present = sum(p >= 0 for p in pos) / len(pos)
        in_order = 1.0 if self._in_order(pos) else 0.0
        body = self._block(text, self._r_open, self._r_close)
        length = min(len(body) / self.length_target_chars, 1.0) if body is not None else 0.0
        completeness = (present + in_order + length) / 3.0
        has_answer = self._block(text, self._a_open, self._a_close) is not None
        tags = body is not None and has_answer
        bonus = 1.0 if tags and in_order else (self.tags_only_bonus if tags else 0.0)
        raw = self.predicted_text(text)
        pred = self._float(raw) if raw is not None else None
        gold = self._gold(answer)
        acc = self.accuracy(pred, gold)
        rows, calc = self._calc_verdicts(text)
        cast = (
            self.w_accuracy * acc
            + self.w_completeness * completeness
            + self.w_format_bonus * bonus
            + self.w_calc * calc
        )
        return CastTerms(
            cast,
            acc,
            completeness,
            present,
            in_order,
            length,
            bonus,
            calc,
            tuple(pos),
            body is not None,
            has_answer,
            raw,
            gold,
            tuple(rows),
        )

    def cast_score(self, text: str, answer: object = None) -> float:
        """reward_cast_math_and_completeness for one completion."""
        return self.cast_terms(text, answer).cast

    def score(self, text: str, answer: object = None, question: str | None = None, detail: bool = False) -> Grade:
        exact = self.exact_format if self.format_exact_ok(text) else 0.0
        soft = self.format_soft_score(text)
        t = self.cast_terms(text, answer)
        raw, gold = t.raw, t.gold
        predicted = None
        if raw is not None and len(raw) <= self.max_predicted_chars:
            try:
                predicted = format_value(Fraction(raw.replace(",", "")))
            except ValueError:  # e.g. non-ASCII digits that float() read but Fraction() does not
                predicted = None
        correct = None if answer is None else t.accuracy == 1.0
        issues: list[str] = []
        if not t.has_reasoning:
            issues.append(Code.MISSING_REASONING)
        if not t.has_answer:
            issues.append(Code.MISSING_ANSWER)
        if any(q < 0 for q in t.positions):
            issues.append(Code.MISSING_SECTION)
        elif not t.headings_in_order:
            issues.append(Code.SECTION_OUT_OF_ORDER)
        if t.has_answer and raw is None:
            issues.append("no_number")
        if any(not ok for _, _, ok in t.calc_rows):
            issues.append(RubricCode.FALSE_CLAIM)
        info = None
        if detail:
            scores = {
                "accuracy": t.accuracy,
                "completeness": t.completeness,
                "headings_present": t.headings_present,
                "headings_in_order": t.headings_in_order,
                "length": t.length,
                "format_bonus": t.format_bonus,
                "calc_consistency": t.calc_consistency,
                "calc_lines": float(len(t.calc_rows)),
            }
            ref = Fraction(gold) if gold is not None and math.isfinite(gold) else None
            info = Detail(None, None, ref, (), MappingProxyType(scores))
        parts = (("format_exact", exact), ("format_soft", soft), ("cast", t.cast))
        return _grade(self, parts, correct, predicted, issues, info)


# --------------------------------------------------------------------------------------
# Registry.
# --------------------------------------------------------------------------------------

DEFAULT_RUBRIC = "dsa-cast"
RUBRICS: Mapping[str, Rubric] = MappingProxyType(
    {
        "dsa-cast": DsaCastRubric(),
        "seed": SeedRubric(),
        "format": FormatRubric(),
    }
)
"""The registered rubrics by name (read-only), each with its documented defaults."""


def get_rubric(name: str = DEFAULT_RUBRIC, **options: Any) -> Rubric:
    """The rubric registered as ``name``, with ``options`` replacing its fields, e.g.
    ``get_rubric("dsa-cast", partial_credit=True, percent="number")``."""
    if name not in RUBRICS:
        raise ValueError(f"unknown rubric {name!r}; known: {', '.join(RUBRICS)}")
    base = RUBRICS[name]
    if not options:
        return base
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"rubric {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(sorted(known - {'name'}))}"
        )
    return dataclasses.replace(base, **options)


def resolve_rubric(rubric: str | Rubric) -> Rubric:
    """A rubric object from a registered name or an instance."""
    if isinstance(rubric, Rubric):
        return rubric
    if isinstance(rubric, str):
        found = RUBRICS.get(rubric)
        if found is None:
            raise ValueError(f"unknown rubric {rubric!r}; known: {', '.join(RUBRICS)}")
        return found
    raise TypeError(f"rubric must be a name or a Rubric, got {type(rubric).__name__}")
