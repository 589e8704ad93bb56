"""Line-accurate JSONL reading: every bad line is reported with its file and line number.

A path ending in ``.gz`` is read through ``gzip`` (the embedded GSM8K copy is stored that way).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataFormatError(ValueError):
    """A data file holds a record that cannot be used; the message names the file and line."""

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}")


@dataclass(frozen=True)
class BadLine:
    """A skipped line: where it is and why it was rejected."""

    path: str
    line: int
    reason: str


@dataclass(frozen=True)
class JsonlRecords:
    """Records read from a JSONL file, each with its 1-based line number, and the lines skipped."""

    records: tuple[tuple[int, dict[str, Any]], ...]
    bad_lines: tuple[BadLine, ...]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataFormatError]]:
    """Yield ``(line_number, record)`` for each non-blank line, or ``(line_number, error)``."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, DataFormatError(path, number, f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(value, dict):
                yield number, DataFormatError(path, number, f"expected a JSON object, got {type(value).__name__}")
                continue
            yield number, value


def read_jsonl(
    path: str | Path,
    *,
    skip_bad: bool = False,
    check: Callable[[dict[str, Any]], str | None] | None = None,
    limit: int | None = None,
) -> JsonlRecords:
    """Read a JSONL file of objects.

    ``check(record)`` returns a reason string for a record that parses but is unusable. A bad line
    raises :class:`DataFormatError` naming file and line, or, with ``skip_bad``, is skipped and
    listed in ``bad_lines``. ``limit`` stops after that many good records.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    good: list[tuple[int, dict[str, Any]]] = []
    bad: list[BadLine] = []
    for number, item in iter_jsonl(path):
        if isinstance(item, dict) and check is not None:
            reason = check(item)
            if reason is not None:
                item = DataFormatError(path, number, reason)
        if isinstance(item, DataFormatError):
            if not skip_bad:
                raise item
            bad.append(BadLine(item.path, item.line, item.reason))
            continue
        good.append((number, item))
        if limit is not None and len(good) >= limit:
            break
    return JsonlRecords(tuple(good), tuple(bad))
