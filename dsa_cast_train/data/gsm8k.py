"""GSM8K loading and the GSM8K -> DSA conversion.

GSM8K solutions are short lines of worked text with calculator annotations ``<<48/2=24>>`` and a
final ``#### 72`` line. The conversion turns each part into a section that carries information:

- Plan: one numbered item per solution line, describing the operation it performs (``Divide 48 by
  2 to find the clips in May.``) or, for a line without a calculation, its first clause;
- Reasoning: the solution lines with the annotations folded into the text (``48/2 = 24``);
- Evidence: one ``CALC: expr = result`` line per annotation, the expression kept exactly checkable;
- Sanity_check: the question's ask, the final value with its unit, the calculation it comes from,
  and the plausibility checks that hold (whole number for a count, sign);
- the answer block: the ``####`` value alone, commas removed.

``docs/data.md`` gives every rule, including what happens to annotations without an operator and
to solutions without annotations.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import regex as re

from dsa_cast_train.data.dsa_format import CALC_PREFIX, Example, render_response
from dsa_cast_train.data.jsonl import DataFormatError, read_jsonl

__all__ = [
    "ANSWER_MARKER",
    "Calculation",
    "ConvertConfig",
    "GSM8KSolution",
    "GSM8KUnavailable",
    "gsm8k_to_dsa",
    "load_gsm8k",
    "normalize_final",
    "parse_solution",
]

_log = logging.getLogger(__name__)

ANSWER_MARKER = "####"
GSM8K_SPLITS = ("train", "test")
_HF_NAME = ("openai/gsm8k", "main")
_TFDS_NAME = "gsm8k"
_SOURCE_URL = "https://github.com/openai/grade-school-math/tree/master/grade_school_math/data"


class GSM8KUnavailable(RuntimeError):
    """GSM8K could not be loaded from the requested source; the message says what to pass instead."""


# ----------------------------------------------------------------------------------------------
# Loading


def _check_gsm8k(record: dict[str, Any]) -> str | None:
    for field in ("question", "answer"):
        if not isinstance(record.get(field), str) or not record[field].strip():
            return f"field {field!r} is missing or not a non-empty string"
    if ANSWER_MARKER not in record["answer"]:
        return f"field 'answer' has no {ANSWER_MARKER!r} final-answer line"
    return None


def _local_file(path_or_dir: str | Path, split: str) -> Path:
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K {split!r} split not found at {path}. Pass the directory holding "
            f"train.jsonl/test.jsonl (from {_SOURCE_URL}) or the .jsonl file itself, "
            "or use source='hf' / source='tfds' with network access."
        )
    return path


def load_gsm8k(
    path_or_dir: str | Path | None = None,
    split: str = "train",
    *,
    limit: int | None = None,
    source: str = "local",
    skip_bad: bool = False,
) -> list[dict[str, Any]]:
    """GSM8K records ``{"question", "answer", "id"}`` in file order.

    ``source="local"`` (default) reads ``path_or_dir`` (a ``.jsonl`` file, or a directory holding
    ``{split}.jsonl``). ``source="hf"`` uses HuggingFace ``datasets`` (``openai/gsm8k``, ``main``);
    ``source="tfds"`` uses TensorFlow Datasets (``gsm8k``). When the library or the network is
    missing, :class:`GSM8KUnavailable` says which local path to pass instead. A malformed line
    raises :class:`DataFormatError` naming file and line; ``skip_bad`` skips it and logs how many
    were skipped (use :func:`dsa_cast_train.data.read_jsonl` to get the list).
    """
    if split not in GSM8K_SPLITS:
        raise ValueError(f"split must be one of {GSM8K_SPLITS}, got {split!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if source == "local":
        if path_or_dir is None:
            raise ValueError("load_gsm8k(source='local') needs path_or_dir (a .jsonl file or its directory)")
        path = _local_file(path_or_dir, split)
        read = read_jsonl(path, skip_bad=skip_bad, check=_check_gsm8k, limit=limit)
        if read.bad_lines:
            _log.warning("%s: skipped %d malformed line(s), first at line %d",
                         path, len(read.bad_lines), read.bad_lines[0].line)
        return [
            {"question": r["question"], "answer": r["answer"], "id": f"gsm8k-{path.stem}-{number}"}
            for number, r in read.records
        ]
    if source == "hf":
        rows = _load_hf(split)
    elif source == "tfds":
        rows = _load_tfds(split)
    else:
        raise ValueError(f"source must be 'local', 'hf' or 'tfds', got {source!r}")
    out = []
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        reason = _check_gsm8k(row)
        if reason is not None:
            if not skip_bad:
                raise DataFormatError(f"{source}:gsm8k/{split}", i + 1, reason)
            continue
        out.append({"question": row["question"], "answer": row["answer"], "id": f"gsm8k-{split}-{i + 1}"})
    return out


def _unavailable(source: str, split: str, exc: BaseException) -> GSM8KUnavailable:
    return GSM8KUnavailable(
        f"GSM8K could not be loaded through {source} ({type(exc).__name__}: {exc}). Offline, download "
        f"{split}.jsonl from {_SOURCE_URL} and pass its directory: "
        f"load_gsm8k('/path/to/gsm8k', split={split!r}) (this checkout's tests use ../shared/data/gsm8k/)."
    )


def _load_hf(split: str) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: PLC0415 - optional, heavy
    except ImportError as exc:
        raise _unavailable("HuggingFace datasets (not installed)", split, exc) from exc
    try:
        ds = datasets.load_dataset(*_HF_NAME, split=split)
        return [{"question": r["question"], "answer": r["answer"]} for r in ds]
    except Exception as exc:  # network, hub or cache errors all mean "not available here"
        raise _unavailable("HuggingFace datasets", split, exc) from exc


def _load_tfds(split: str) -> list[dict[str, Any]]:
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional, heavy
    except ImportError as exc:
        raise _unavailable("TensorFlow Datasets (not installed)", split, exc) from exc
    try:
        source = tfds.data_source(_TFDS_NAME, split=split, download=True)
        rows = []
        for r in source:
            q, a = r["question"], r["answer"]
            rows.append({
                "question": q.decode("utf-8") if isinstance(q, bytes) else str(q),
                "answer": a.decode("utf-8") if isinstance(a, bytes) else str(a),
            })
        return rows
    except Exception as exc:  # download, build or decode errors all mean "not available here"
        raise _unavailable("TensorFlow Datasets", split, exc) from exc


def default_gsm8k_dir() -> Path | None:
    """``$DSA_CAST_GSM8K`` if set, else ``../shared/data/gsm8k`` beside this checkout, if present."""
    env = os.environ.get("DSA_CAST_GSM8K")
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"
    return candidate if candidate.is_dir() else None


# ----------------------------------------------------------------------------------------------
# Parsing a solution


@dataclass(frozen=True)
class ConvertConfig:
    """Knobs of the GSM8K -> DSA conversion.

    Attributes:
      target_max_words: at most this many words after a step's result name what it finds in the
        Plan item ("to find the clips in May").
      clause_max_words: a Plan item for a line without a calculation keeps at most this many words
        of the line's first clause.
      recover_plain: for an annotation without an operator (``<<27=27>>``) and for solutions without
        annotations, take the calculation from plain text written as ``a op b = c`` just before it.
    """

    target_max_words: int = 8
    clause_max_words: int = 14
    recover_plain: bool = True

    def __post_init__(self) -> None:
        for name in ("target_max_words", "clause_max_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConvertConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Calculation:
    """One checkable calculation: ``expr = result`` with ``expr`` in the grammar digits, ``.``,
    ``+ - * /`` and parentheses. ``origin`` is "annotation" or "text" (recovered from plain text)."""

    expr: str
    result: str
    origin: str = "annotation"

    @property
    def line(self) -> str:
        return f"{CALC_PREFIX} {self.expr} = {self.result}"


@dataclass(frozen=True)
class Step:
    """One solution line: its readable text, its calculations and what its result names."""

    text: str
    calculations: tuple[Calculation, ...]
    target: str = ""  # words right after the step's last result, e.g. "clips in May"
    currency: str = ""  # currency sign written before the step's last result, e.g. "$"


@dataclass(frozen=True)
class GSM8KSolution:
    """A parsed GSM8K solution: readable steps, the final value (normalised), skipped annotations."""

    steps: tuple[Step, ...]
    final: str
    skipped: tuple[str, ...]  # annotations without an operator that no plain text explained

    @property
    def calculations(self) -> tuple[Calculation, ...]:
        return tuple(c for s in self.steps for c in s.calculations)


_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_NUM = r"\d[\d,]*(?:\.\d+)?|\.\d+"
_DISPLAY_NUM = re.compile(rf"-?(?:{_NUM})")
_CURRENCY = "$€£¢"
_CURRENCY_NAMES = {"$": "dollars", "€": "euros", "£": "pounds", "¢": "cents"}
# A plain-text calculation: number (op number)+ = number, numbers optionally with a currency sign.
# Multiplication may be written x, X or ×. Not preceded by a letter, digit or ')' (so "2x + 3 = 9"
# and "44(.50)=22" are not taken); the result is not followed by a fraction or another operand.
_OPERAND = rf"[{_CURRENCY}]?\s?(?:{_NUM})"
_OP = r"\s*[-+*/x×X÷]\s*"
# Not inside a word, a number, a mixed number ("3 1/2") or after a closing parenthesis / percent.
_EXPR_START = r"(?<![\w.)/%^])(?<!\d\s)"
# The result is not followed by more digits, a letter ("2p"), "(", "%", "^", a fraction ("1 1/2")
# or another operand ("= 5 + 3").
_RESULT_END = r"(?!\.?\d|,\d|[A-Za-z(%^/*]|\s+\d+/\d|\s*[-+*/×÷x]\s*\d)"
_PLAIN_CALC = re.compile(
    rf"{_EXPR_START}(?P<expr>{_OPERAND}(?:{_OP}{_OPERAND})+)\s*=\s*"
    rf"[{_CURRENCY}]?\s?(?P<result>-?(?:{_NUM})){_RESULT_END}"
)
_PLAIN_TAIL = re.compile(rf"{_EXPR_START}(?P<expr>{_OPERAND}(?:{_OP}{_OPERAND})+)\s*=\s*[{_CURRENCY}]?\s*$")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_TARGET_STOP = re.compile(r"[.,;:!?()\n]|\s(?:because|so|and then|which|since|if|but|for a total)\s")
_NON_TARGET_START = frozenset(
    "a an the and or so because to in of on at for from by with is are was were be as than which "
    "that this it its each more less left over total altogether then this there per".split()
)
# Words that end the unit named after a result ("herb plants when spring ended" -> "herb plants").
_UNIT_STOP = _NON_TARGET_START | frozenset(
    "when after before into onto during while who will would can could has have had does did do "
    "did needs need now still remaining all both".split()
)
_OP_VERBS = {"+": "Add", "-": "Subtract", "*": "Multiply", "/": "Divide"}


def _clean_number(text: str) -> str:
    """A number as written in text -> digits for an expression: drop currency, thousands commas."""
    text = text.strip().lstrip(_CURRENCY).strip()
    return text.replace(",", "")


def normalize_final(text: str) -> str:
    """The ``####`` value for the answer block: trimmed, commas and a currency sign removed."""
    value = text.strip().replace(",", "")
    value = value.lstrip(_CURRENCY).strip()
    return value.rstrip(".") if re.fullmatch(r"-?\d+(?:\.\d+)?\.", value) else value


def normalize_expression(expr: str) -> str:
    """Make a GSM8K annotation expression checkable: no spaces, thousands commas or currency, no
    leading or doubled unary ``+`` (``+30+46`` -> ``30+46``, ``3*+6`` -> ``3*6``), ``//`` -> ``/``,
    ``x``/``×`` -> ``*``, ``÷`` -> ``/``."""
    out = re.sub(r"\s+", "", expr)
    out = re.sub(rf"[{_CURRENCY}]", "", out)
    out = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", out)
    out = out.replace("×", "*").replace("÷", "/").replace("//", "/")
    out = re.sub(r"(?<=[\d.)])[xX](?=[\d.(])", "*", out)
    out = re.sub(r"(^|[-+*/(])\++", r"\1", out)
    return out


def _has_operator(expr: str) -> bool:
    return bool(re.search(r"(?<=[\d.)])[-+*/]", expr))


def _target_after(text: str, pos: int, max_words: int) -> str:
    """Words naming a step's result: the text after ``pos`` up to punctuation or a clause word."""
    rest = text[pos:]
    stop = _TARGET_STOP.search(rest)
    words = _WORD.findall(rest[: stop.start()] if stop else rest)[:max_words]
    if not words or words[0].lower() in _NON_TARGET_START:
        return ""
    return " ".join(words)


def _currency_before(text: str, pos: int) -> str:
    before = text[:pos].rstrip()
    return before[-1] if before and before[-1] in _CURRENCY else ""


def _rewrite_line(line: str, config: ConvertConfig, plain: bool = False) -> tuple[Step, list[str]]:
    """Fold a solution line's annotations into readable text and collect its calculations."""
    pieces: list[str] = []
    calcs: list[Calculation] = []
    skipped: list[str] = []
    target = currency = ""
    pos = 0
    for m in _ANNOTATION.finditer(line):
        pieces.append(line[pos : m.start()])
        pos = m.end()
        written = "".join(pieces)
        inner = m.group(1)
        if "=" not in inner:
            skipped.append(inner)
            continue
        raw_expr, raw_result = inner.rsplit("=", 1)
        expr, result = normalize_expression(raw_expr), _clean_number(raw_result)
        display = _DISPLAY_NUM.match(line, pos)
        after = display.end() if display else pos
        # The sentence already shows "... = " before the annotation: the annotation only repeats it.
        stated = written.rstrip().rstrip(_CURRENCY).rstrip().endswith("=")
        calc: Calculation | None = None
        if _has_operator(expr):
            calc = Calculation(expr, result)
            if not stated:  # "He has <<5*3=15>>15 goats" -> "He has 5*3 = 15 goats"
                cur = _currency_before(written, len(written))
                head = written.rstrip()[:-1] if cur else written
                sep = "" if not head or head.endswith((" ", "\n", "(")) else " "
                pieces = [head, f"{sep}{expr} = {cur}"]
        elif config.recover_plain:
            tail = _PLAIN_TAIL.search(written)
            if tail is not None:
                calc = Calculation(_plain_expr(tail.group("expr")), result, origin="text")
        if calc is not None:
            calcs.append(calc)
            target = _target_after(line, after, config.target_max_words)
            currency = _currency_before(line, m.start()) or _currency_before(written, len(written))
        else:
            skipped.append(inner)
    pieces.append(line[pos:])
    text = re.sub(r"[ \t]+", " ", "".join(pieces)).strip()
    if plain:
        for m in _PLAIN_CALC.finditer(text):
            calcs.append(Calculation(_plain_expr(m.group("expr")), _clean_number(m.group("result")), "text"))
        if calcs:
            last = list(_PLAIN_CALC.finditer(text))[-1]
            target = _target_after(text, last.end(), config.target_max_words)
            currency = _currency_before(text, last.start("result"))
    return Step(text, tuple(calcs), target, currency), skipped


def _plain_expr(written: str) -> str:
    return normalize_expression(written)


def parse_solution(solution: str, config: ConvertConfig = ConvertConfig()) -> GSM8KSolution:
    """Split a GSM8K answer into readable steps with calculations and the normalised final value."""
    if ANSWER_MARKER not in solution:
        raise ValueError(f"GSM8K answer has no {ANSWER_MARKER!r} line: {solution[:80]!r}")
    work, final = solution.rsplit(ANSWER_MARKER, 1)
    lines = [line for line in work.splitlines() if line.strip()]
    steps: list[Step] = []
    skipped: list[str] = []
    for line in lines:
        step, skip = _rewrite_line(line, config)
        steps.append(step)
        skipped.extend(skip)
    if config.recover_plain and not any(s.calculations for s in steps):
        # No usable annotation at all: take the calculations written as plain "a op b = c" text.
        steps = [_rewrite_line(line, config, plain=True)[0] for line in lines]
    steps = [s for s in steps if s.text]
    return GSM8KSolution(tuple(steps), normalize_final(final), tuple(skipped))


# ----------------------------------------------------------------------------------------------
# Sections


def _as_number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def _operands(expr: str, op: str) -> list[str] | None:
    """The operands of ``expr`` when it is a chain of one operator without parentheses."""
    if "(" in expr or ")" in expr:
        return None
    parts = re.split(r"(?<=[\d.])([-+*/])", expr)
    ops = set(parts[1::2])
    if ops != {op}:
        return None
    return parts[0::2]


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def describe_calculation(expr: str) -> str:
    """An imperative phrase for one calculation: "Divide 48 by 2", "Add 5, 10 and 14", ..."""
    for op, verb in _OP_VERBS.items():
        xs = _operands(expr, op)
        if not xs:
            continue
        if op == "-":
            return f"Subtract {_join(xs[1:])} from {xs[0]}"
        if op in "*/" and len(xs) == 2:
            return f"{verb} {xs[0]} by {xs[1]}"
        return f"{verb} {_join(xs)}"
    return f"Evaluate {expr}"


_MIN_CLAUSE_WORDS = 3


def _unit(target: str) -> str:
    """The unit in the words after a result: up to the first function word ("bars in the box")."""
    words = []
    for word in target.split():
        if word.lower() in _UNIT_STOP:
            break
        words.append(word)
    return " ".join(words)


def _first_clause(text: str, max_words: int) -> str:
    clause = re.split(r"(?<=[.!?;:])\s|,\s", text, maxsplit=1)[0].strip().rstrip(".!?;:,")
    if len(clause.split()) < _MIN_CLAUSE_WORDS:  # "Therefore," -> use the whole line instead
        clause = text.strip().rstrip(".!?;:,")
    words = clause.split()
    if len(words) > max_words:
        clause = " ".join(words[:max_words]) + " ..."
    return clause[:1].upper() + clause[1:]


def _plan(steps: Sequence[Step], config: ConvertConfig) -> str:
    items = []
    for step in steps:
        if step.calculations:
            phrases = [describe_calculation(c.expr) for c in step.calculations]
            item = ", then ".join([phrases[0]] + [p[:1].lower() + p[1:] for p in phrases[1:]])
            if step.target:
                noun = f"the amount {step.target}" if step.target.split()[0].lower() == "per" else f"the {step.target}"
                item += f" to find {noun}"
        else:
            item = _first_clause(step.text, config.clause_max_words)
        items.append(f"{len(items) + 1}. {item}{'' if item.endswith('...') else '.'}")
    return "\n".join(items)


_ASK = re.compile(r"[^.?!]*\?")


def _ask(question: str) -> str:
    asks = _ASK.findall(question)
    if asks:
        return asks[-1].strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!])\s+", question.strip()) if s.strip()]
    return sentences[-1] if sentences else question.strip()


def _sanity(question: str, solution: GSM8KSolution) -> str:
    final = solution.final
    value = _as_number(final)
    last = solution.steps[-1] if solution.steps else None
    unit = ""
    if last is not None and last.calculations and _as_number(last.calculations[-1].result) == value:
        unit = _CURRENCY_NAMES.get(last.currency) or _unit(last.target)
    ask = _ask(question)
    lines = [f"The question asks: {ask}"]
    lines.append(f"The final value is {final}{' ' + unit if unit else ''}.")
    calcs = solution.calculations
    matching = [c for c in calcs if value is not None and _as_number(c.result) == value]
    if calcs and matching and matching[-1] is calcs[-1]:
        lines.append(f"It is the result of the last calculation, {calcs[-1].expr} = {calcs[-1].result}.")
    elif matching:
        lines.append(f"It is the result of the calculation {matching[-1].expr} = {matching[-1].result}.")
    else:
        lines.append("It is the value the reasoning reaches in its last step.")
    if value is not None:
        sign = "not negative" if value >= 0 else "negative"
        if "how many" in ask.lower() and value.denominator == 1 and value >= 0:
            lines.append(f"It is a whole number and {sign}, as a count must be.")
        else:
            lines.append(f"It is {sign}.")
    return "\n".join(lines)


def _evidence(solution: GSM8KSolution) -> str:
    if solution.calculations:
        return "\n".join(c.line for c in solution.calculations)
    return (
        "No separate numeric calculation is written out: the reasoning solves for the unknown "
        f"step by step and arrives at {solution.final}."
    )


def gsm8k_to_dsa(record: dict[str, Any], config: ConvertConfig = ConvertConfig()) -> Example:
    """Convert one GSM8K record (``question``, ``answer``; optional ``id``) into a DSA example."""
    for field in ("question", "answer"):
        if not isinstance(record.get(field), str):
            raise ValueError(f"GSM8K record {record.get('id', '')!r}: field {field!r} missing or not a string")
    solution = parse_solution(record["answer"], config)
    if not solution.final:
        raise ValueError(f"GSM8K record {record.get('id', '')!r}: empty {ANSWER_MARKER} value")
    response = render_response(
        plan=_plan(solution.steps, config),
        reasoning="\n".join(s.text for s in solution.steps),
        evidence=_evidence(solution),
        sanity_check=_sanity(record["question"], solution),
        answer=solution.final,
    )
    return Example(
        question=record["question"].strip(),
        response=response,
        answer=solution.final,
        source="gsm8k",
        id=str(record.get("id", "")),
    )
