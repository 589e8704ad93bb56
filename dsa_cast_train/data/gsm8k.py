"""GSM8K loading and the GSM8K -> DSA conversion.

The conversion turns each part of a GSM8K solution into a section that carries information
(the solution itself is read by :mod:`dsa_cast_train.data.gsm8k_solution`):

- Plan: one numbered item per solution line, naming the operation it performs (``Divide 48 by 2
  to find the clips in May.``) or, for a line without a calculation, its first clause;
- Reasoning: the solution lines with the annotations folded into the text (``48/2 = 24``);
- Evidence: one ``CALC: expr = result`` line per calculation, kept exactly checkable;
- Sanity_check: the question's ask, the final value with its unit, the calculation it comes from,
  and the plausibility checks that hold (a whole number for a count, the sign);
- the answer block: the ``####`` value alone, commas removed.

``docs/data.md`` gives every rule and the records that cannot reach the rubric's maximum.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import regex as re

from dsa_cast_train.data.dsa_format import Example, render_response
from dsa_cast_train.data.gsm8k_solution import (
    ANSWER_MARKER,
    Calculation,
    ConvertConfig,
    GSM8KSolution,
    Step,
    as_number,
    parse_solution,
)
from dsa_cast_train.data.jsonl import DataFormatError, read_jsonl

__all__ = [
    "EMBEDDED_GSM8K_DIR",
    "GSM8KSource",
    "GSM8KUnavailable",
    "default_gsm8k_dir",
    "describe_gsm8k_source",
    "describe_calculation",
    "gsm8k_to_dsa",
    "load_gsm8k",
    "with_unit_conversion",
]

_log = logging.getLogger(__name__)

GSM8K_SPLITS = ("train", "test")
_HF_NAME = ("openai/gsm8k", "main")
_TFDS_NAME = "gsm8k"
_SOURCE_URL = "https://github.com/openai/grade-school-math/tree/master/grade_school_math/data"
EMBEDDED_GSM8K_DIR = Path(__file__).resolve().parents[1] / "assets" / "gsm8k"
"""The GSM8K copy shipped inside the package (``{split}.jsonl.gz``, MIT licence beside it): the
default source when no path is given, so a bare clone or wheel needs no download."""


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
        plain, packed = path / f"{split}.jsonl", path / f"{split}.jsonl.gz"
        path = packed if packed.is_file() and not plain.is_file() else plain
    if not path.is_file():
        raise FileNotFoundError(
            f"GSM8K {split!r} split not found at {path}. Pass the directory holding "
            f"train.jsonl/test.jsonl (from {_SOURCE_URL}; .jsonl.gz also works) or the file itself, "
            "leave the path unset for the copy shipped in the package, "
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

    ``source="local"`` (default) reads ``path_or_dir`` (a ``.jsonl``/``.jsonl.gz`` file, or a
    directory holding ``{split}.jsonl`` or ``{split}.jsonl.gz``; ``None``: :func:`default_gsm8k_dir`,
    the embedded copy unless ``$DSA_CAST_GSM8K`` is set). ``source="hf"`` uses HuggingFace ``datasets`` (``openai/gsm8k``, ``main``);
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
        path = _local_file(default_gsm8k_dir() if path_or_dir is None else path_or_dir, split)
        read = read_jsonl(path, skip_bad=skip_bad, check=_check_gsm8k, limit=limit)
        if read.bad_lines:
            _log.warning("%s: skipped %d malformed line(s), first at line %d",
                         path, len(read.bad_lines), read.bad_lines[0].line)
        return [
            {"question": r["question"], "answer": r["answer"], "id": f"gsm8k-{_stem(path)}-{number}"}
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
        f"load_gsm8k('/path/to/gsm8k', split={split!r}), or use the copy shipped in the package "
        f"(source='local' with no path)."
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


def default_gsm8k_dir() -> Path:
    """``$DSA_CAST_GSM8K`` if set, else the embedded copy (:data:`EMBEDDED_GSM8K_DIR`)."""
    env = os.environ.get("DSA_CAST_GSM8K")
    return Path(env) if env else EMBEDDED_GSM8K_DIR


def _stem(path: Path) -> str:
    """``test`` for ``test.jsonl`` and ``test.jsonl.gz`` alike (record ids do not depend on packing)."""
    name = path.name
    for suffix in (".gz", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class GSM8KSource:
    """Where GSM8K was read from, for run reports and manifests."""

    kind: str
    """``embedded`` (the package's copy), ``local`` (a path), ``hf`` or ``tfds``."""
    location: str
    """The directory or file read, or the library's dataset name."""
    sha256: Mapping[str, str]
    """Split -> sha256 of the file read (empty for ``hf``/``tfds``, which are not files here)."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "sha256": dict(self.sha256)}

    def describe(self) -> str:
        """One line: ``embedded GSM8K (.../assets/gsm8k; test.jsonl.gz sha256 1affc2f0...)``."""
        digests = ", ".join(f"{split} sha256 {digest}" for split, digest in self.sha256.items())
        return f"{self.kind} GSM8K ({self.location}{'; ' + digests if digests else ''})"


def describe_gsm8k_source(path_or_dir: str | Path | None, splits: Sequence[str] = GSM8K_SPLITS, *,
                          source: str = "local") -> GSM8KSource:
    """The :class:`GSM8KSource` that :func:`load_gsm8k` reads for these arguments (files hashed)."""
    if source == "hf":
        return GSM8KSource("hf", "/".join(_HF_NAME), {})
    if source == "tfds":
        return GSM8KSource("tfds", _TFDS_NAME, {})
    root = default_gsm8k_dir() if path_or_dir is None else Path(path_or_dir)
    files = {split: _local_file(root, split) for split in splits}
    embedded = all(f.resolve().parent == EMBEDDED_GSM8K_DIR for f in files.values())
    location = str(root if root.is_dir() else files[splits[0]]) if splits else str(root)
    return GSM8KSource("embedded" if embedded else "local", location,
                       {split: file_sha256(f) for split, f in files.items()})


# ----------------------------------------------------------------------------------------------
# Sections

_CURRENCY_NAMES = {"$": "dollars", "€": "euros", "£": "pounds", "¢": "cents"}
_OP_VERBS = {"+": "Add", "-": "Subtract", "*": "Multiply", "/": "Divide"}
_SPLIT_OPS = re.compile(r"(?<=[\d.%])([-+*/])")
_CLAUSE_END = re.compile(r"(?<=[.!?;:])\s|,\s")
_LOWER_WORD = re.compile(r"[a-z][a-z]")
_ASK = re.compile(r"[^.?!]*\?")
_SENTENCE_END = re.compile(r"(?<=[.!])\s+")
_NUMBER = re.compile(r"-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_CENTS = re.compile(r"\bcents?\b", re.IGNORECASE)
# Words that end the unit named after a result ("herb plants when spring ended" -> "herb plants").
_UNIT_STOP = frozenset(
    "a an the and or so because to in of on at for from by with is are was were be as than which "
    "that this it its each more less left over total altogether then there per when after before "
    "into onto during while who will would can could has have had does did do needs need now "
    "still remaining all both".split()
)


def _operands(expr: str, op: str) -> list[str] | None:
    """The operands of ``expr`` when it is a chain of one operator without parentheses."""
    if "(" in expr or ")" in expr:
        return None
    parts = _SPLIT_OPS.split(expr)
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
        if op == "/":
            break  # "a/b/c": no plain-words form
        return f"{verb} {_join(xs)}"
    return f"Evaluate {expr}"


def _unit(target: str) -> str:
    """The unit in the words after a result: up to the first function word ("bars in the box")."""
    words = []
    for word in target.split():
        if word.lower() in _UNIT_STOP:
            break
        words.append(word)
    return " ".join(words)


def _first_clause(text: str, config: ConvertConfig) -> str:
    clause = _CLAUSE_END.split(text, maxsplit=1)[0].strip().rstrip(".!?;:,")
    if len(clause.split()) < config.min_clause_words:  # "Therefore," -> use the whole line instead
        clause = text.strip().rstrip(".!?;:,")
    words = clause.split()
    if len(words) > config.clause_max_words:
        clause = " ".join(words[: config.clause_max_words]) + " ..."
    if _LOWER_WORD.match(clause):  # "let x be ..." -> "Let x be ...", but not "x=66"
        clause = clause[:1].upper() + clause[1:]
    return clause


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
            item = _first_clause(step.text, config)
        items.append(f"{len(items) + 1}. {item}{'' if item.endswith('...') else '.'}")
    return "\n".join(items)


def _ask(question: str) -> str:
    asks = _ASK.findall(question)
    if asks:
        return asks[-1].strip()
    sentences = [s.strip() for s in _SENTENCE_END.split(question.strip()) if s.strip()]
    return sentences[-1] if sentences else question.strip()


def _mentions(text: str, value: Fraction) -> bool:
    """Whether ``text`` writes ``value`` as a plain number (thousands commas allowed)."""
    return any(as_number(m.group()) == value for m in _NUMBER.finditer(text))


def _sanity(question: str, solution: GSM8KSolution) -> str:
    """The question's ask, the final value with its unit, where it comes from, and the checks that
    hold. Every sentence is true of the record, including when GSM8K's final value disagrees with
    its own working."""
    final = solution.final
    value = as_number(final)
    calcs = solution.calculations
    last = solution.steps[-1] if solution.steps else None
    unit = ""
    if last is not None and last.calculations and as_number(last.calculations[-1].result) == value:
        unit = _CURRENCY_NAMES.get(last.currency) or _unit(last.target)
    ask = _ask(question)
    lines = [f"The question asks: {ask}", f"The final value is {final}{' ' + unit if unit else ''}."]
    matching = [c for c in calcs if value is not None and as_number(c.result) == value]
    if matching and matching[-1] is calcs[-1]:
        lines.append(f"It is the result of the last calculation, {calcs[-1].expr} = {calcs[-1].result}.")
    elif matching:
        lines.append(f"It is the result of the calculation {matching[-1].expr} = {matching[-1].result}.")
    elif value is not None and any(_mentions(s.text, value) for s in solution.steps):
        lines.append("It is the value the reasoning arrives at.")
    elif calcs:
        lines.append(
            f"It is not what the last calculation gives ({calcs[-1].expr} = {calcs[-1].result}), "
            "so the working above does not reach it."
        )
    else:
        lines.append("The working above does not state it directly.")
    for sub in solution.substitutions[:1]:
        c = sub.calculation
        lines.append(f"Putting {sub.variable} = {sub.value} back into {sub.equation} gives {c.expr} = {c.result}, which holds.")
    if value is not None:
        sign = "not negative" if value >= 0 else "negative"
        if "how many" in ask.lower() and value.denominator == 1 and value >= 0:
            lines.append(f"It is a whole number and {sign}, as a count must be.")
        else:
            lines.append(f"It is {sign}.")
    return "\n".join(lines)


def _evidence(solution: GSM8KSolution) -> str:
    if solution.evidence:
        return "\n".join(c.line for c in solution.evidence)
    return (
        "No calculation in the solution is written in a checkable a op b = c form; the reasoning "
        f"above works step by step to {solution.final}."
    )


def with_unit_conversion(question: str, solution: GSM8KSolution) -> GSM8KSolution:
    """Add the dollars -> cents step GSM8K leaves implicit: when the question asks in cents, the
    working ends in dollars (``$0.49``) and the final value is that result times 100 (``49``),
    append ``In cents, that is 0.49*100 = 49 cents.`` with its calculation."""
    value = as_number(solution.final)
    calcs = solution.calculations
    if value is None or not calcs or not _CENTS.search(question):
        return solution
    if any(as_number(c.result) == value for c in calcs):
        return solution
    last = calcs[-1]
    dollars = as_number(last.result)
    if dollars is None or dollars * 100 != value:
        return solution
    calc = Calculation(f"{last.result}*100", solution.final, origin="conversion")
    step = Step(f"In cents, that is {calc.expr} = {calc.result} cents.", (calc,), target="cents")
    return GSM8KSolution(solution.steps + (step,), solution.final, solution.skipped, solution.substitutions)


def gsm8k_to_dsa(record: dict[str, Any], config: ConvertConfig = ConvertConfig()) -> Example:
    """Convert one GSM8K record (``question``, ``answer``; optional ``id``) into a DSA example."""
    for field in ("question", "answer"):
        if not isinstance(record.get(field), str):
            raise ValueError(f"GSM8K record {record.get('id', '')!r}: field {field!r} missing or not a string")
    solution = with_unit_conversion(record["question"], parse_solution(record["answer"], config))
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
