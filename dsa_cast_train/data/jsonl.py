"""Line-accurate JSONL reading for the training data, on the project's one reader
(:mod:`dsa_cast.io`): every bad line (invalid UTF-8, a NUL byte, invalid JSON, a 5,000-digit
integer, nesting too deep, not an object) is a :class:`DataFormatError` naming the file and line.

A path ending in ``.gz`` is read through ``gzip`` (the embedded GSM8K copy is stored that way); a
damaged gzip stream is an error naming the file and the line it stopped at.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dsa_cast import io
from dsa_cast.io import BadLine, JsonlRecords

__all__ = ["BadLine", "DataFormatError", "JsonlRecords", "iter_jsonl", "read_jsonl"]


class DataFormatError(io.InputError):
    """A data file holds a record that cannot be used; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, reason: str):
        super().__init__(reason, path, line)


def _data_error(err: io.InputError) -> DataFormatError:
    return DataFormatError(err.path or "", err.line, err.reason)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataFormatError]]:
    """Yield ``(line_number, record)`` for each non-blank line, or ``(line_number, error)``.

    A missing file is a :class:`FileNotFoundError`; one that cannot be opened or read (a
    directory, an I/O error) a :class:`DataFormatError`."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file")
    name = str(path)
    number = 0
    try:
        with io.open_input(name) as raw, _maybe_gunzip(name, raw) as fh:
            for line in io.iter_jsonl(fh, name):
                number = line.number
                yield line.number, line.value if line.error is None else _data_error(line.error)
    except io.InputError as err:  # opening or reading the file itself
        if isinstance(err, DataFormatError):
            raise
        raise _data_error(err) from None
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataFormatError(path, number + 1, f"damaged gzip data ({err})") from None


@contextlib.contextmanager
def _maybe_gunzip(name: str, fh: Any) -> Iterator[Any]:
    if not name.endswith(".gz"):
        yield fh
        return
    with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        yield gz


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
            bad.append(BadLine(item.path or str(path), item.line or number, item.reason))
            continue
        good.append((number, item))
        if limit is not None and len(good) >= limit:
            break
    return JsonlRecords(tuple(good), tuple(bad))
