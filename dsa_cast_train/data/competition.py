"""The "DSA competition" JSONL, the optional CSV of extra items, and the train/eval split.

JSONL records carry ``question``, ``reasoning`` (a ``<reasoning>`` block) and ``answer`` (an
``<answer>`` block), with the field fallbacks of the seed notebook: ``prompt``/``input`` for the
question, ``solution``/``text`` for the reasoning, ``final_answer`` for the answer, or one prebuilt
chat ``text``. Bare fields are wrapped in their tags. Rules: ``docs/data.md``.
"""

from __future__ import annotations

import csv
import io as stdio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsa_cast_train.data.dsa_format import (
    ANSWER_END,
    ANSWER_START,
    CALC_PREFIX,
    END_OF_TURN,
    MODEL_TURN,
    REASONING_END,
    REASONING_START,
    SECTION_HEADINGS,
    USER_TURN,
    Example,
    block_body,
    ensure_block,
    render_response,
)
from dsa_cast_train.data.jsonl import BadLine, DataFormatError, iter_jsonl

__all__ = [
    "ANSWER_FIELDS",
    "CSV_COLUMNS",
    "QUESTION_FIELDS",
    "REASONING_FIELDS",
    "LoadResult",
    "load_dsa_jsonl",
    "load_extra_csv",
    "record_to_example",
    "split_examples",
]

QUESTION_FIELDS = ("question", "prompt", "input")
REASONING_FIELDS = ("reasoning", "solution", "text")
ANSWER_FIELDS = ("answer", "final_answer")
CSV_COLUMNS = ("question", "answer", "reasoning", "calc_expr")


@dataclass(frozen=True)
class LoadResult:
    """Examples loaded from a file and the lines skipped (only with ``skip_bad=True``)."""

    examples: list[Example]
    bad_lines: tuple[BadLine, ...] = ()


def _first_text(record: dict[str, Any], fields: Sequence[str]) -> str | None:
    """The first of ``fields`` holding a non-blank string (numbers are accepted as text)."""
    for name in fields:
        value = record.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            value = str(value)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _is_chat_text(text: str) -> bool:
    return USER_TURN in text and MODEL_TURN in text


def _from_chat_text(text: str) -> tuple[str, str, str]:
    """Split a prebuilt chat text into (prompt, question, response); raises ValueError."""
    cut = text.index(MODEL_TURN) + len(MODEL_TURN)
    prompt, response = text[:cut], text[cut:]
    end = response.rfind(END_OF_TURN)
    if end >= 0:
        response = response[:end]
    user = prompt[prompt.index(USER_TURN) + len(USER_TURN):]
    user = user[: user.find(END_OF_TURN)] if END_OF_TURN in user else user
    question = user.rsplit("\n\n", 1)[-1].strip()  # the system prompt, if any, precedes a blank line
    if not response.strip():
        raise ValueError("prebuilt 'text' has an empty model turn")
    return prompt, question, response.strip()


def record_to_example(record: dict[str, Any], *, source: str = "dsa_jsonl", id: str = "") -> Example:
    """One competition record -> :class:`Example`; raises ValueError naming the missing field."""
    text = record.get("text")
    if isinstance(text, str) and _is_chat_text(text):
        prompt, question, response = _from_chat_text(text)
        answer = block_body(response, ANSWER_START, ANSWER_END)
        if answer is None:
            raise ValueError("prebuilt 'text' has no <answer> block in its model turn")
        return Example(question, response, answer, source, id, prompt=prompt)

    question = _first_text(record, QUESTION_FIELDS)
    if question is None:
        raise ValueError(f"no question: none of the fields {QUESTION_FIELDS} holds text")
    reasoning = _first_text(record, REASONING_FIELDS)
    if reasoning is None:
        raise ValueError(f"no reasoning: none of the fields {REASONING_FIELDS} holds text")
    answer_field = _first_text(record, ANSWER_FIELDS)
    if answer_field is None:
        # A reasoning field that already holds the whole response (both blocks) is accepted.
        inner = block_body(reasoning, ANSWER_START, ANSWER_END)
        if inner is None:
            raise ValueError(f"no answer: none of the fields {ANSWER_FIELDS} holds text")
        response = reasoning.strip()
        answer = inner
    else:
        reasoning_block = ensure_block(reasoning, REASONING_START, REASONING_END)
        answer_block = ensure_block(answer_field, ANSWER_START, ANSWER_END)
        response = f"{reasoning_block}\n{answer_block}"
        answer = block_body(answer_block, ANSWER_START, ANSWER_END) or ""
    if not answer:
        raise ValueError("empty answer")
    return Example(question.strip(), response, answer, source, id)


def load_dsa_jsonl(path: str | Path, *, skip_bad: bool = False, source: str = "dsa_jsonl") -> LoadResult:
    """Load a competition JSONL file. A line that is not a JSON object or lacks a usable question,
    reasoning or answer raises :class:`DataFormatError` (``path:line: reason``); with ``skip_bad``
    it is skipped and listed in ``bad_lines``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    examples: list[Example] = []
    bad: list[BadLine] = []
    for number, item in iter_jsonl(path):
        if isinstance(item, dict):
            try:
                examples.append(record_to_example(item, source=source, id=f"{path.name}:{number}"))
                continue
            except ValueError as exc:
                item = DataFormatError(path, number, str(exc))
        if not skip_bad:
            raise item
        bad.append(BadLine(item.path, item.line, item.reason))
    return LoadResult(examples, tuple(bad))


def _csv_response(reasoning: str, calc_expr: str, answer: str) -> str:
    """A DSA response for a CSV row; ``calc_expr`` becomes an Evidence ``CALC:`` line."""
    calc = ""
    if calc_expr:
        calc = f"{CALC_PREFIX} {calc_expr}" if "=" in calc_expr else f"{CALC_PREFIX} {calc_expr} = {answer}"
    body = block_body(reasoning, REASONING_START, REASONING_END)
    body = reasoning.strip() if body is None else body
    if all(h in body for h in SECTION_HEADINGS):
        if calc and calc not in body:  # insert the CALC line at the end of the Evidence section
            i = body.index(SECTION_HEADINGS[3])
            body = f"{body[:i].rstrip()}\n{calc}\n{body[i:]}"
        return f"{REASONING_START}\n{body}\n{REASONING_END}\n{ANSWER_START}\n{answer}\n{ANSWER_END}"
    first = body.splitlines()[0].strip() if body else ""
    plan = f"1. {first}" if first else "1. Work out the value the question asks for."
    evidence = calc or f"The value {answer} follows directly from the reasoning above."
    sanity = f"The final value is {answer}, the value the reasoning arrives at."
    return render_response(plan, body or f"The answer is {answer}.", evidence, sanity, answer)


MAX_CSV_BYTES = 256 << 20
"""An extra CSV larger than this is refused (it is read whole, to locate a bad byte's line)."""


def load_extra_csv(path: str | Path, *, source: str = "extra_csv") -> list[Example]:
    """Extra items from a CSV with header ``question,answer,reasoning,calc_expr`` (``reasoning``
    and ``calc_expr`` may be empty). A missing column, an empty question/answer, bytes that are
    not UTF-8 or a malformed row raises :class:`DataFormatError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as fh:
        raw = fh.read(MAX_CSV_BYTES + 1)
    if len(raw) > MAX_CSV_BYTES:
        raise DataFormatError(path, None, f"larger than {MAX_CSV_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, line, f"not UTF-8: invalid byte 0x{raw[exc.start]:02x}") from None
    if "\x00" in text:
        raise DataFormatError(path, text.count("\n", 0, text.index("\x00")) + 1, "NUL byte")
    reader = csv.DictReader(stdio.StringIO(text, newline=""))
    try:
        return _csv_examples(path, reader, source)
    except csv.Error as exc:  # e.g. a field over csv's size limit
        raise DataFormatError(path, reader.line_num, f"invalid CSV: {exc}") from None


def _csv_examples(path: Path, reader: csv.DictReader, source: str) -> list[Example]:
    header = reader.fieldnames or []
    missing = [c for c in ("question", "answer") if c not in header]
    if missing:
        raise DataFormatError(path, 1, f"missing column(s) {missing}; expected header {','.join(CSV_COLUMNS)}")
    out: list[Example] = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise DataFormatError(path, line, f"more fields than the {len(header)} header columns")
        question = (row.get("question") or "").strip()
        answer = (row.get("answer") or "").strip()
        for name, value in (("question", question), ("answer", answer)):
            if not value:
                raise DataFormatError(path, line, f"empty {name!r}")
        response = _csv_response(
            (row.get("reasoning") or "").strip(), (row.get("calc_expr") or "").strip(), answer
        )
        out.append(Example(question, response, answer, source, f"{path.name}:{line}"))
    return out


def split_examples(
    examples: Sequence[Example], *, eval_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Shuffle with ``seed`` and split into (train, eval); the same input and seed always give the
    same split. ``eval_fraction`` of the items (rounded, at least 1 when > 0 and there are at
    least 2 items) go to eval; train is never empty."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    items = list(examples)
    random.Random(seed).shuffle(items)
    n_eval = round(eval_fraction * len(items))
    if eval_fraction > 0 and len(items) >= 2:
        n_eval = max(1, n_eval)
    n_eval = min(n_eval, max(0, len(items) - 1))
    return items[n_eval:], items[:n_eval]
