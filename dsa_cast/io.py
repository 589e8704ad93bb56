"""Reading JSON Lines and JSON files with located errors, and writing files atomically.

One reader for the whole project (the ``grade`` CLI, the trainers' data, metrics and manifests,
config files): every way a line can be bad becomes an :class:`InputError` whose message is
``FILE:LINE: reason`` (invalid UTF-8, a NUL byte, invalid JSON, a 5,000-digit integer, arrays
nested 100,000 deep, a line longer than the limit, a value that is not an object where objects are
required), never a ``UnicodeDecodeError``, ``ValueError`` or ``RecursionError`` traceback. A UTF-8
byte-order mark at the start of a file (or of a line: files joined with ``cat``) is skipped. Every
line and file is read within :class:`JsonLimits` (memory) and in time linear in its size.

One writer: :func:`atomic_output` (and the ``atomic_write_*`` helpers) write to a temporary name
in the destination's directory, flush and ``fsync`` it, then ``os.replace`` it over the
destination, so a reader never sees half a file and a crash never truncates the old one; it
refuses a destination that is one of the files being read (``inputs``).

Pure Python, standard library only (the grading core imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

__all__ = [
    "InputError",
    "OutputError",
    "JsonLimits",
    "DEFAULT_LIMITS",
    "JsonLine",
    "RawLine",
    "BadLine",
    "JsonlRecords",
    "open_input",
    "iter_lines",
    "parse_line",
    "iter_jsonl",
    "read_jsonl",
    "decode_json",
    "load_json",
    "same_file",
    "refuse_inputs",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
]

STDIN = "-"
"""The path that names standard input."""

_BOM = b"\xef\xbb\xbf"
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class InputError(ValueError):
    """A bad input, located: the message is ``PATH:LINE: reason`` (or ``PATH: reason``, or the
    bare reason when there is no file)."""

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None, line: int | None = None):
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.line = line
        where = "" if self.path is None else (f"{self.path}:{line}: " if line is not None else f"{self.path}: ")
        super().__init__(where + reason)


class OutputError(ValueError):
    """An output cannot be written as asked (it would replace an input being read); the message
    names both paths."""


@dataclass(frozen=True)
class JsonLimits:
    """Bounds on what one read may cost.

    Attributes:
      max_line_bytes: a JSONL line longer than this is an error (read in bounded pieces up to its
        end, so memory stays bounded too).
      max_file_bytes: a whole JSON file (config, manifest, marker) larger than this is an error.
      max_depth: arrays/objects nested deeper than this are an error (the standard decoder gives a
        ``RecursionError`` near 1,000; values nested a little less would break later writers).
    """

    max_line_bytes: int = 64 << 20
    max_file_bytes: int = 64 << 20
    max_depth: int = 128

    def __post_init__(self) -> None:
        for name in ("max_line_bytes", "max_file_bytes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"JsonLimits.{name} must be an int >= 1, got {value!r}")


DEFAULT_LIMITS = JsonLimits()


# --------------------------------------------------------------------------------------
# Decoding one JSON text.
# --------------------------------------------------------------------------------------


def _depth_and_strings(value: Any, max_depth: int) -> str | None:
    """Why ``value`` is unusable (nested deeper than ``max_depth``, or a string holding a lone
    surrogate that no UTF-8 writer can write back), or None. Iterative: no recursion limit."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            if d > max_depth:
                return f"nested deeper than {max_depth} levels"
            for k, item in v.items():
                stack.append((k, d))
                stack.append((item, d + 1))
        elif isinstance(v, list):
            if d > max_depth:
                return f"nested deeper than {max_depth} levels"
            stack.extend((item, d + 1) for item in v)
        elif isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as err:
                return f"a string holds a lone surrogate (\\u{ord(v[err.start]):04x}), not text"
    return None


def decode_json(data: bytes | str, *, limits: JsonLimits = DEFAULT_LIMITS) -> tuple[Any, str | None, int | None]:
    """``(value, None, None)``, or ``(None, reason, line)`` when ``data`` is not usable JSON
    (``line`` is the 1-based line of a syntax error within ``data``, else None). ``bytes`` must
    be UTF-8 (a leading byte-order mark is skipped)."""
    if isinstance(data, bytes):
        raw = data
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        nul = raw.find(b"\x00")
        if nul >= 0:
            return None, f"NUL byte at column {nul + 1}", None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"not UTF-8: invalid byte 0x{raw[err.start]:02x} at column {err.start + 1}", None
    else:
        text = data
        if text.startswith("\ufeff"):
            text = text[1:]
        if "\x00" in text:
            return None, f"NUL character at column {text.index(chr(0)) + 1}", None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err.msg} (column {err.colno})", err.lineno
    except RecursionError:
        return None, "invalid JSON: nested too deeply", None
    except ValueError as err:  # a number beyond int's digit limit, and the like
        return None, f"invalid JSON: {str(err).split(';')[0]}", None
    # Walk the value only when it may be too deep (more brackets than levels allowed) or may hold
    # an escaped lone surrogate: both are rare, and the checks that decide it run in C.
    probe = raw if raw is not None else text.encode("utf-8", "surrogatepass")
    deep = isinstance(value, (dict, list)) and probe.count(b"[") + probe.count(b"{") > limits.max_depth
    if deep or (b"\\u" in probe and _ESCAPED_SURROGATE.search(probe)):
        why = _depth_and_strings(value, limits.max_depth)
        if why is not None:
            return None, why, None
    return value, None, None


# --------------------------------------------------------------------------------------
# Opening inputs.
# --------------------------------------------------------------------------------------


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str], *, stdin: BinaryIO | None = None) -> Iterator[BinaryIO]:
    """A binary file opened for reading, or standard input for ``"-"``; every failure to open
    (missing, a directory, no permission) is an :class:`InputError` naming the path."""
    name = os.fspath(path)
    if name == STDIN:
        yield stdin if stdin is not None else sys.stdin.buffer
        return
    if os.path.isdir(name):
        raise InputError("is a directory, not a file", name)
    try:
        fh = open(name, "rb")  # noqa: SIM115  (closed below)
    except FileNotFoundError:
        raise InputError("no such file", name) from None
    except OSError as err:
        raise InputError(f"cannot open: {_reason(err)}", name) from None
    with fh:
        yield fh


# --------------------------------------------------------------------------------------
# JSON Lines.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line: where it is and what it holds (``value``) or why not (``error``)."""

    number: int
    """1-based line number."""
    offset: int
    """Byte offset of the line's start."""
    size: int
    """Bytes the line takes, newline included."""
    value: Any
    error: InputError | None


@dataclass(frozen=True)
class BadLine:
    """A skipped line: where it is and why it was rejected."""

    path: str
    line: int
    reason: str


@dataclass(frozen=True)
class JsonlRecords:
    """Records read from a JSONL file, each with its 1-based line number, and the lines skipped."""

    records: tuple[tuple[int, Any], ...]
    bad_lines: tuple[BadLine, ...]


def _read_line(fh: BinaryIO, limit: int) -> tuple[bytes, bool]:
    """``(line, too_long)``: one line of at most ``limit`` bytes, or the first ``limit + 1`` bytes
    of a longer one with ``too_long`` (the rest is still unread: :func:`_skip_line`)."""
    raw = fh.readline(limit + 1)
    return raw, len(raw) > limit and not raw.endswith(b"\n")


def _skip_line(fh: BinaryIO) -> int:
    """Read to the end of the current line in bounded pieces; returns the bytes skipped."""
    skipped = 0
    while True:
        piece = fh.readline(1 << 20)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


@dataclass(frozen=True)
class RawLine:
    """One non-blank line as read, not yet decoded (a byte-order mark starting line 1 removed);
    ``error`` is set, and ``data`` empty, for a line over the length limit."""

    number: int
    offset: int
    size: int
    data: bytes
    error: InputError | None


def iter_lines(
    fh: BinaryIO, name: str, *, limits: JsonLimits = DEFAULT_LIMITS, first_line: int = 1, first_offset: int = 0
) -> Iterator[RawLine]:
    """Every non-blank line of an open binary file, streaming, at most ``limits.max_line_bytes``
    each (a longer one is reported at once, then skipped in bounded pieces when the caller reads
    on). A read failure raises an :class:`InputError` naming the file and line. ``first_line`` /
    ``first_offset`` number the lines of a file read from the middle (after a ``seek``)."""
    offset = first_offset
    number = first_line - 1
    while True:
        number += 1
        try:
            raw, too_long = _read_line(fh, limits.max_line_bytes)
        except OSError as err:
            raise InputError(f"cannot read: {_reason(err)}", name, number) from None
        if not raw:
            return
        size = len(raw)
        here, offset = offset, offset + size
        if too_long:  # reported at once (a caller that stops never reads the rest of an endless line)
            yield RawLine(
                number, here, size, b"", InputError(f"line longer than {limits.max_line_bytes} bytes", name, number)
            )
            try:
                offset += _skip_line(fh)
            except OSError as err:
                raise InputError(f"cannot read: {_reason(err)}", name, number) from None
            continue
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.strip():
            yield RawLine(number, here, size, raw, None)


def parse_line(line: RawLine, name: str, *, objects: bool = True, limits: JsonLimits = DEFAULT_LIMITS) -> JsonLine:
    """Decode a :class:`RawLine` (in any process: what ``grade --jobs`` workers do)."""
    if line.error is not None:
        return JsonLine(line.number, line.offset, line.size, None, line.error)
    value, reason, _ = decode_json(line.data, limits=limits)
    if reason is None and objects and not isinstance(value, dict):
        reason = f"expected a JSON object, got {_json_type(value)}"
    error = None if reason is None else InputError(reason, name, line.number)
    return JsonLine(line.number, line.offset, line.size, None if error else value, error)


def iter_jsonl(
    fh: BinaryIO,
    name: str,
    *,
    objects: bool = True,
    limits: JsonLimits = DEFAULT_LIMITS,
    first_line: int = 1,
    first_offset: int = 0,
) -> Iterator[JsonLine]:
    """Every non-blank line of an open binary file, decoded, streaming (one line in memory).

    A bad line is yielded with its :class:`InputError` (``name:LINE: reason``) so the caller
    decides whether to stop or skip; with ``objects`` a value that is not a JSON object is bad.
    A read failure (I/O error) raises an :class:`InputError` naming the file and line.
    ``first_line``/``first_offset`` number the lines of a file read from the middle (after a
    ``seek`` to a line found earlier)."""
    for line in iter_lines(fh, name, limits=limits, first_line=first_line, first_offset=first_offset):
        yield parse_line(line, name, objects=objects, limits=limits)


def _json_type(value: Any) -> str:
    return type(value).__name__


def read_jsonl(
    path: str | os.PathLike[str],
    *,
    skip_bad: bool = False,
    check: Callable[[dict[str, Any]], str | None] | None = None,
    limit: int | None = None,
    objects: bool = True,
    limits: JsonLimits = DEFAULT_LIMITS,
) -> JsonlRecords:
    """Read a JSONL file of objects (``"-"``: standard input).

    ``check(record)`` returns a reason string for a record that parses but is unusable. A bad
    line raises :class:`InputError` (``path:LINE: reason``), or with ``skip_bad`` is skipped
    and listed in ``bad_lines``. ``limit`` stops after that many good records."""
    name = os.fspath(path)
    good: list[tuple[int, Any]] = []
    bad: list[BadLine] = []
    with open_input(name) as fh:
        for line in iter_jsonl(fh, name, objects=objects, limits=limits):
            error = line.error
            if error is None and check is not None:
                why = check(line.value)
                if why is not None:
                    error = InputError(why, name, line.number)
            if error is not None:
                if not skip_bad:
                    raise error
                bad.append(BadLine(name, line.number, error.reason))
                continue
            good.append((line.number, line.value))
            if limit is not None and len(good) >= limit:
                break
    return JsonlRecords(tuple(good), tuple(bad))


# --------------------------------------------------------------------------------------
# Whole JSON files.
# --------------------------------------------------------------------------------------


def load_json(path: str | os.PathLike[str], *, objects: bool = True, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """The JSON value of a whole file (an object unless ``objects`` is False); every failure is
    an :class:`InputError` naming the file (and the line of a syntax error)."""
    name = os.fspath(path)
    with open_input(name) as fh:
        try:
            raw = fh.read(limits.max_file_bytes + 1)
        except OSError as err:
            raise InputError(f"cannot read: {_reason(err)}", name) from None
    return parse_json(raw, name, objects=objects, limits=limits)


def parse_json(raw: bytes | str, name: str, *, objects: bool = True, limits: JsonLimits = DEFAULT_LIMITS) -> Any:
    """Like :func:`load_json` for content already read (e.g. an archive member named ``name``)."""
    if len(raw) > limits.max_file_bytes:
        raise InputError(f"larger than {limits.max_file_bytes} bytes", name)
    value, reason, line = decode_json(raw, limits=limits)
    if reason is None and objects and not isinstance(value, dict):
        reason = f"expected a JSON object, got {_json_type(value)}"
    if reason is not None:
        raise InputError(reason, name, line)
    return value


# --------------------------------------------------------------------------------------
# Atomic outputs.
# --------------------------------------------------------------------------------------


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (links and hard links included); False when either is
    missing, standard input, or not comparable."""
    if os.fspath(a) == STDIN or os.fspath(b) == STDIN:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """:class:`OutputError` when ``out`` is the same file as one of ``inputs``."""
    for src in inputs:
        if src is not None and same_file(out, src):
            raise OutputError(
                f"refusing to write {os.fspath(out)}: it is the input {os.fspath(src)} (choose another output)"
            )


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported everywhere (Windows); the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_beside(target: str) -> tuple[int, str]:
    directory, base = os.path.split(target)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 and the umask, as for a file opened the ordinary way
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary file beside {target}")


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    encoding: str = "utf-8",
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Iterator[IO[Any]]:
    """A file to write ``path`` through: a temporary file in the same directory, renamed over
    ``path`` (after flush and ``fsync``) when the block ends normally, removed when it raises.
    ``mode`` is ``"w"`` (text) or ``"wb"``. A destination that is one of ``inputs`` is refused
    (:class:`OutputError`) before anything is written; a symbolic link is written through (its
    target is replaced) and an existing file keeps its permission bits."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_output: mode must be 'w' or 'wb', got {mode!r}")
    refuse_inputs(path, inputs)
    target = os.path.realpath(path) if os.path.islink(path) else os.fspath(path)
    if os.path.isdir(target):
        raise OutputError(f"cannot write {target}: it is a directory")
    fd, tmp = _temp_beside(target)
    try:
        with open(fd, "wb") if mode == "wb" else open(fd, mode, encoding=encoding, newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(target) or ".")


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "wb", inputs=inputs) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, "w", inputs=inputs) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(
    path: str | os.PathLike[str],
    value: Any,
    *,
    indent: int | None = 2,
    default: Callable[[Any], Any] | None = None,
    sort_keys: bool = False,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``value`` as strict JSON (no ``NaN``/``Infinity``: ``ValueError``) atomically."""
    text = json.dumps(value, indent=indent, default=default, sort_keys=sort_keys, allow_nan=False)
    return atomic_write_text(path, text + "\n", inputs=inputs)
