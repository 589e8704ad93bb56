"""Reading a GSM8K solution: readable steps and the checkable calculations behind them.

A solution is lines of worked text with calculator annotations ``<<48/2=24>>`` and a final
``#### 72`` line. :func:`parse_solution` folds each annotation into its sentence
(``48/2 = 24``) and keeps its calculation. A line without an annotated calculation gives the
calculations written in it as plain ``a op b = c`` text, and an algebraic solution that still has
no evidence gets the solved value checked in its own equations
(``4x+12=56`` with ``x=11`` -> ``4*11+12 = 56``). Every calculation taken from plain text is
confirmed by the core's exact evaluator (:func:`dsa_cast.claims.check_claims`) first; annotations
are kept as GSM8K wrote them. The rules are listed in ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import regex as re

from dsa_cast.claims import check_claims, evaluate
from dsa_cast_train.data.dsa_format import CALC_PREFIX

__all__ = [
    "ANSWER_MARKER",
    "Calculation",
    "ConvertConfig",
    "GSM8KSolution",
    "Step",
    "Substitution",
    "as_number",
    "normalize_expression",
    "normalize_final",
    "parse_solution",
    "substitution_checks",
]

ANSWER_MARKER = "####"


@dataclass(frozen=True)
class ConvertConfig:
    """Knobs of the GSM8K -> DSA conversion.

    Attributes:
      target_max_words: at most this many words after a step's result name what the step finds
        ("to find the clips in May" in the Plan).
      clause_max_words: a Plan item for a line without a calculation keeps at most this many words
        of the line's first clause.
      min_clause_words: a first clause shorter than this ("Therefore,") gives way to the whole line.
      recover_plain: take calculations written as plain ``a op b = c`` text: for an annotation
        without an operator (``287 x 4 = <<1148=1148>>``) and for solutions whose annotations give
        no evidence.
      max_substitution_checks: for a solution still without evidence (algebra), at most this many
        of its equations are checked by putting the solved value back; 0 turns this off.
    """

    target_max_words: int = 8
    clause_max_words: int = 14
    min_clause_words: int = 3
    recover_plain: bool = True
    max_substitution_checks: int = 3

    def __post_init__(self) -> None:
        for name in ("target_max_words", "clause_max_words", "min_clause_words"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConvertConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_substitution_checks < 0:
            raise ValueError(
                f"ConvertConfig.max_substitution_checks must be >= 0, got {self.max_substitution_checks}"
            )


# ----------------------------------------------------------------------------------------------
# Patterns (compiled once; every quantifier is bounded by the line it scans)

_CURRENCY = "$€£¢"
_NUM = r"\d[\d,]*(?:\.\d+)?|\.\d+"
_SPACED_NUM = r"\d{1,3}(?: \d{3})+(?![\d,]|\.\d)"  # "1 500 000"
_PLAIN_NUM = rf"[{_CURRENCY}]?\s?(?:{_SPACED_NUM}|{_NUM})%?"
_IMPLICIT = rf"{_PLAIN_NUM}\((?:{_NUM})(?:[-+*/](?:{_NUM}))?\)"  # "35(2/5)" = 35*(2/5)
_GROUP = rf"\(\s*{_PLAIN_NUM}(?:\s*[-+*/x×X÷−]\s*{_PLAIN_NUM})+\s*\)"  # "(1 + 1/3)"
_OPERAND = rf"(?:{_IMPLICIT}|{_PLAIN_NUM}|{_GROUP})"
_OP = r"\s*[-+*/x×X÷−]\s*"
_EXPR = rf"(?:{_OPERAND}(?:{_OP}{_OPERAND})+|{_IMPLICIT})"
# Not inside a word, number or clock time, not after a closing parenthesis, "%" or an operator
# ("X*2 - 40 = 250" is not read as "2 - 40 = 250"), not the fraction of a mixed number ("3 1/2").
_EXPR_START = r"(?<![\w.)%^])(?<!\d:)(?<![*/+\-×÷−]\s*)(?<!\d\s)"
# The result is not followed by more digits, a letter ("2p"), "(", "^", a clock time, or another
# operand ("= 5 + 3").
_RESULT_END = r"(?!\.?\d|,\d|[A-Za-z(^/*:]|\s+\d|\s*[-+*/×÷x−]\s*\d)"

_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_PLAIN_CALC = re.compile(
    rf"{_EXPR_START}(?P<expr>{_EXPR})\s*=\s*"
    rf"[{_CURRENCY}]?\s?(?P<result>-?(?:{_SPACED_NUM}|{_NUM})%?){_RESULT_END}"
)
_PLAIN_TAIL = re.compile(rf"{_EXPR_START}(?P<expr>{_EXPR})\s*=\s*[{_CURRENCY}]?\s*$")
_DISPLAY_NUM = re.compile(rf"-?(?:{_NUM})")
_UNSIGNED = re.compile(r"\d+(?:\.\d+)?|\.\d+")
_HAS_OPERATOR = re.compile(r"(?<=[\d.)%])[-+*/]")
_SPACES = re.compile(r"\s+")
_BLANKS = re.compile(r"[ \t]+")
_CURRENCY_SIGN = re.compile(rf"[{_CURRENCY}]")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_PAREN = re.compile(r"(?<=[\d.%])\(")
_PAREN_NUMBER = re.compile(r"\)(?=[\d.(])")
_TIMES_LETTER = re.compile(r"(?<=[\d.)])[xX](?=[\d.(])")
_SLASHES = re.compile(r"//+")
_UNARY_PLUS = re.compile(r"(^|[-+*/(])\++")
_BARE_PARENS = re.compile(r"\((\d+(?:\.\d+)?)\)")
_COMMAS_SPACES = re.compile(r"[,\s]")
_FINAL_DOT = re.compile(r"-?\d+(?:\.\d+)?\.")
_HAS_DIGIT = re.compile(r"\d")
_EQUALS = re.compile(r"=")

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d")
_TARGET_STOP = re.compile(r"[.,;:!?()\n]|\s(?:because|so|and then|which|since|if|but|for a total)\s")
_FUNCTION_WORDS = frozenset(
    "a an the and or so because to in of on at for from by with is are was were be as than which "
    "that this it its each more less left over total altogether then there per".split()
)
_TARGET_VERBS = frozenset(
    "is are was were be been will would can could has have had does did do need needs left "
    "remain remaining remains to".split()
)


# ----------------------------------------------------------------------------------------------
# Results


def as_number(text: str) -> Fraction | None:
    """A plain decimal (thousands commas allowed) as a Fraction; None for anything else."""
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


@dataclass(frozen=True)
class Calculation:
    """One checkable calculation ``expr = result`` (``expr``: numbers, ``+ - * /``, ``%`` and
    parentheses). ``origin``: "annotation" (GSM8K's calculator), "text" (written as plain text),
    "substitution" (a solved value put back into an equation) or "conversion" (dollars -> cents)."""

    expr: str
    result: str
    origin: str = "annotation"

    @property
    def line(self) -> str:
        return f"{CALC_PREFIX} {self.expr} = {self.result}"

    @property
    def restates_number(self) -> bool:
        """True when the calculation only restates a number (``16*1 = 16``, ``1+1 = 2``,
        ``1148 = 1148``): fewer than two operands, none other than 0 and 1, or a single such
        operand equal to the result. The ``dsa-cast`` rubric does not count these as evidence."""
        operands = [Fraction(x) for x in _UNSIGNED.findall(self.expr)]
        core = [x for x in operands if x not in (0, 1)]
        if len(operands) < 2 or not core:
            return True
        if len(core) > 1:
            return False
        result = as_number(self.result)
        if result is None:  # a result written as arithmetic (substitution checks)
            try:
                result = evaluate(self.result)
            except ValueError:
                return False
        return result == core[0]


@dataclass(frozen=True)
class Step:
    """One solution line: its readable text, its calculations, and what its last result names."""

    text: str
    calculations: tuple[Calculation, ...]
    target: str = ""  # words right after the step's last result, e.g. "clips in May"
    currency: str = ""  # currency sign written before the step's last result, e.g. "$"


@dataclass(frozen=True)
class Substitution:
    """A solved value put back into one of the solution's equations: ``variable = value`` turns
    ``equation`` (as written) into the checked ``calculation``."""

    variable: str
    value: str
    equation: str
    calculation: Calculation


@dataclass(frozen=True)
class GSM8KSolution:
    """A parsed GSM8K solution: readable steps, the final value (normalised), the annotations that
    gave no calculation, and the substitution checks (only for solutions without other evidence)."""

    steps: tuple[Step, ...]
    final: str
    skipped: tuple[str, ...] = ()
    substitutions: tuple[Substitution, ...] = ()

    @property
    def calculations(self) -> tuple[Calculation, ...]:
        """Every calculation of the steps, in order."""
        return tuple(c for s in self.steps for c in s.calculations)

    @property
    def evidence(self) -> tuple[Calculation, ...]:
        """The Evidence ``CALC:`` lines: the steps' calculations except those that only restate a
        number, then the substitution checks."""
        own = tuple(c for c in self.calculations if not c.restates_number)
        return own + tuple(s.calculation for s in self.substitutions)


# ----------------------------------------------------------------------------------------------
# Normalisation


def normalize_final(text: str) -> str:
    """The ``####`` value for the answer block: trimmed, without commas, currency sign or a final
    period."""
    value = _CURRENCY_SIGN.sub("", text.strip().replace(",", "")).strip()
    return value[:-1] if _FINAL_DOT.fullmatch(value) else value


def normalize_expression(expr: str) -> str:
    """Make an expression checkable as written: no spaces, thousands separators or currency; no
    leading or doubled unary ``+`` (``+30+46`` -> ``30+46``, ``3*+6`` -> ``3*6``); ``//`` -> ``/``;
    ``x``/``×`` -> ``*``; ``÷`` -> ``/``; ``−`` -> ``-``; implicit products made explicit
    (``35(2/5)`` -> ``35*(2/5)``)."""
    out = _SPACES.sub("", expr)
    out = _CURRENCY_SIGN.sub("", out)
    out = _THOUSANDS_COMMA.sub("", out)
    out = out.replace("×", "*").replace("÷", "/").replace("−", "-")
    out = _SLASHES.sub("/", _UNARY_PLUS.sub(r"\1", out))
    out = _NUMBER_PAREN.sub("*(", out)
    return _TIMES_LETTER.sub("*", out)


def _clean_number(text: str) -> str:
    return _COMMAS_SPACES.sub("", text.strip().lstrip(_CURRENCY))


def has_operator(expr: str) -> bool:
    """Whether a normalised expression holds a binary operation."""
    return _HAS_OPERATOR.search(expr) is not None


def _verified(calc: Calculation) -> Calculation | None:
    """``calc`` when the core's exact evaluator confirms it, else None."""
    verdicts = check_claims(calc.line)
    return calc if len(verdicts) == 1 and verdicts[0].ok is True else None


# ----------------------------------------------------------------------------------------------
# Lines


def _target_after(text: str, pos: int, max_words: int) -> str:
    """Words naming a step's result: those after ``pos`` up to punctuation, a number, a clause word
    or a verb, without dangling function words ("clips in May", not "the" or "more")."""
    rest = text[pos:]
    stop = _TARGET_STOP.search(rest)
    words = _WORD.findall(rest[: stop.start()] if stop else rest)[:max_words]
    if any(w.isdigit() for w in words):  # "portions of 200 ml" -> "portions of" -> "portions"
        words = words[: next(k for k, w in enumerate(words) if w.isdigit())]
    if not words or words[0].lower() in _FUNCTION_WORDS:
        return ""
    for k in range(1, len(words)):
        if words[k].lower() in _TARGET_VERBS:
            words = words[:k]
            break
    while words[-1].lower() in _FUNCTION_WORDS:
        words.pop()
    return " ".join(words)


def _currency_before(text: str, pos: int) -> str:
    before = text[:pos].rstrip()
    return before[-1] if before and before[-1] in _CURRENCY else ""


def _rewrite_line(line: str, config: ConvertConfig, plain: bool) -> tuple[Step, list[str]]:
    """Fold a line's annotations into its text and collect its calculations (``plain``: a line
    whose annotations give no calculation also gets those written as plain ``a op b = c`` text
    that the core evaluator confirms)."""
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
        calc: Calculation | None = None
        if has_operator(expr):
            calc = Calculation(expr, result)
            # "48/2 = <<48/2=24>>24" already shows the expression: the annotation is dropped.
            # "He has <<5*3=15>>15 goats" -> "He has 5*3 = 15 goats" ("$<<..>>" -> "5*3 = $15").
            if not written.rstrip().rstrip(_CURRENCY).rstrip().endswith("="):
                cur = _currency_before(written, len(written))
                head = written.rstrip()[:-1] if cur else written
                sep = "" if not head or head.endswith((" ", "\n", "(")) else " "
                pieces = [head, f"{sep}{expr} = {cur}"]
        elif config.recover_plain:  # "287 x 4 = <<1148=1148>>": the calculation is in the text
            tail = _PLAIN_TAIL.search(written)
            if tail is not None:
                calc = _verified(Calculation(normalize_expression(tail.group("expr")), result, "text"))
        if calc is None:
            skipped.append(inner)
            continue
        calcs.append(calc)
        display = _DISPLAY_NUM.match(line, pos)
        target = _target_after(line, display.end() if display else pos, config.target_max_words)
        currency = _currency_before(line, m.start()) or _currency_before(written, len(written))
    pieces.append(line[pos:])
    text = _BLANKS.sub(" ", "".join(pieces)).strip()
    if plain and not calcs:
        last = None
        for m in _PLAIN_CALC.finditer(text):
            calc = _verified(
                Calculation(normalize_expression(m.group("expr")), _clean_number(m.group("result")), "text")
            )
            if calc is not None:
                calcs.append(calc)
                last = m
        if last is not None:
            target = _target_after(text, last.end(), config.target_max_words)
            currency = _currency_before(text, last.start("result"))
    return Step(text, tuple(calcs), target, currency), skipped


# ----------------------------------------------------------------------------------------------
# Substitution checks for algebraic solutions

_VAR = r"(?<![A-Za-z0-9'’.)])[A-Za-z](?![A-Za-z0-9'’(])"
_VALUE = r"-?\d[\d,]*(?:\.\d+)?"
# "x = 11" (not "4 * x = 44", "x = 121/11" or "x = 11x") or "160 = Y" (not "22 - 16 = x").
_ASSIGN = re.compile(
    rf"(?<![-+*/×(]\s*)(?<! [xX] )(?P<v1>{_VAR})\s*=\s*\$?\s*(?P<n1>{_VALUE})"
    rf"(?![\d.]*\s*[-+*/×(%=])(?![\d.]*[A-Za-z])(?![\d.]* [xX] )"
    rf"|(?<![-+*/×]\s*)(?<![\w.$])\$?(?P<n2>{_VALUE})\s*=\s*(?P<v2>{_VAR})(?!\s*[-+*/×(])"
)
_EQ_CHARS = frozenset("0123456789.,$ +-*/×()")
_TIMES_LETTERS = "xX"  # an isolated x between spaces is a multiplication sign (unless the variable)


def _equation_sides(text: str, var: str) -> list[tuple[str, str]]:
    """``(left, right)`` around each ``=`` of ``text``: the longest runs of numbers, operators,
    parentheses and the isolated letter ``var`` on either side."""

    def ok(i: int) -> bool:
        ch = text[i]
        if ch in _EQ_CHARS:
            return True
        isolated = not (i > 0 and text[i - 1].isalpha()) and not (i + 1 < len(text) and text[i + 1].isalpha())
        if ch in _TIMES_LETTERS and ch != var:
            return isolated and 0 < i < len(text) - 1 and text[i - 1] == " " and text[i + 1] == " "
        return ch == var and isolated

    pairs = []
    for m in _EQUALS.finditer(text):
        i = m.start()
        while i > 0 and ok(i - 1):
            i -= 1
        j = m.end()
        while j < len(text) and ok(j):
            j += 1
        left, right = text[i : m.start()].strip(" ,."), text[m.end() : j].strip(" ,.")
        if left and right and _HAS_DIGIT.search(left + right):
            pairs.append((left, right))
    return pairs


def _substitute(side: str, var_pattern: re.Pattern[str], value: str) -> str:
    """``side`` with the variable replaced by ``value`` and implicit products made explicit:
    ``4x+12`` -> ``4*11+12``, ``2(4+x)`` -> ``2*(4+11)``."""
    out = normalize_expression(var_pattern.sub(f"({value})", side))
    out = _PAREN_NUMBER.sub(")*", out)
    return _BARE_PARENS.sub(r"\1", out)


def substitution_checks(lines: Sequence[str], limit: int) -> tuple[Substitution, ...]:
    """Check solved values in the solution's own equations. A variable is a single letter given
    exactly one value in the text (``x = 11``, ``x=11 goats``, ``160 = Y``; ``X`` and ``x`` are
    the same when only one has a value). An equation qualifies when, with the value put in, both
    sides are arithmetic, one has an operation, the core evaluator confirms it and it is not a
    mere restatement. At most ``limit`` checks, in text order, without repeats."""
    text = "\n".join(lines)
    values: dict[str, set[str]] = {}
    for m in _ASSIGN.finditer(text):
        var, value = (m.group("v1"), m.group("n1")) if m.group("v1") else (m.group("v2"), m.group("n2"))
        values.setdefault(var, set()).add(value.replace(",", ""))
    solved = {v: next(iter(vals)) for v, vals in values.items() if len(vals) == 1}
    for var, value in list(solved.items()):
        if var.swapcase() not in values:
            solved[var.swapcase()] = value
    patterns = {v: re.compile(rf"(?<![A-Za-z]){re.escape(v)}(?![A-Za-z])") for v in solved}
    out: list[Substitution] = []
    seen: set[str] = set()
    for line in lines:
        for var, value in solved.items():
            pattern = patterns[var]
            for left, right in _equation_sides(line, var):
                if not (pattern.search(left) or pattern.search(right)):
                    continue
                a, b = _substitute(left, pattern, value), _substitute(right, pattern, value)
                if not has_operator(a):
                    a, b = b, a
                calc = _verified(Calculation(a, b, origin="substitution"))
                if calc is None or calc.restates_number or calc.line in seen:
                    continue
                seen.add(calc.line)
                out.append(Substitution(var, value, f"{left} = {right}", calc))
                if len(out) >= limit:
                    return tuple(out)
    return tuple(out)


# ----------------------------------------------------------------------------------------------


def parse_solution(solution: str, config: ConvertConfig = ConvertConfig()) -> GSM8KSolution:
    """Split a GSM8K answer into readable steps with calculations, and the normalised final value.

    Raises ValueError when there is no ``####`` line."""
    if ANSWER_MARKER not in solution:
        raise ValueError(f"GSM8K answer has no {ANSWER_MARKER!r} line: {solution[:80]!r}")
    work, final = solution.rsplit(ANSWER_MARKER, 1)
    lines = [line for line in work.splitlines() if line.strip()]
    steps: list[Step] = []
    skipped: list[str] = []
    for line in lines:
        step, skip = _rewrite_line(line, config, plain=config.recover_plain)
        if step.text:
            steps.append(step)
        skipped.extend(skip)
    parsed = GSM8KSolution(tuple(steps), normalize_final(final), tuple(skipped))
    if config.max_substitution_checks and not parsed.evidence:
        subs = substitution_checks([s.text for s in steps], config.max_substitution_checks)
        parsed = GSM8KSolution(parsed.steps, parsed.final, parsed.skipped, subs)
    return parsed
