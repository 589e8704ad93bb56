"""``python -m dsa_cast`` (also the ``dsa-cast`` script): grade a file of outputs, explain one.

``grade OUTPUTS.jsonl`` streams the file: each record is graded, written to
``results.jsonl`` at once and folded into a constant-memory :class:`~dsa_cast.report.Summary`,
so a 100k-line file never sits in memory. ``--jobs N`` (default: all cores) grades chunks of
records in ``N`` worker processes (:func:`dsa_cast.parallel.ordered_map`): same output, same
order, still constant memory. References come from the record itself or from a
GSM8K-style ``--answers`` file joined by id or by order (only an id -> byte-offset index of that
file is kept). ``explain`` prints what the rubric saw in one completion. Exit status: 0 on
success, 2 on a usage or input error (the message names the file and line). Full reference:
``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import stat
import sys
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, BinaryIO, cast, overload

from dsa_cast import io
from dsa_cast.adapters import completion_text
from dsa_cast.parallel import available_cores, ordered_map
from dsa_cast.parse import Completion, parse
from dsa_cast.report import ItemResult, ReportConfig, Summary, format_table, write_plots
from dsa_cast.rubrics import RUBRICS, Grade, Rubric, get_rubric
from dsa_cast.schema import DSA

__all__ = ["main", "CliConfig", "InputError"]

EXIT_OK = 0
EXIT_USAGE = 2


@dataclass(frozen=True)
class CliConfig:
    """Fixed knobs of the CLI.

    Attributes:
      progress_min_bytes: ``--progress auto`` shows a bar only for files at least this large.
      max_reported_skips: with ``--skip-bad``, at most this many skipped lines are listed on
        stderr (all are counted).
      explain_preview_chars: ``explain`` shows at most this many characters of each section body.
      jobs_chunk_records: ``grade --jobs``: records sent to a worker at a time (large enough to
        amortise the hand-over, small enough to keep every worker busy near the end of a file).
      jobs_window_per_worker: ``grade --jobs``: chunks in flight per worker (bounds memory).
    """

    progress_min_bytes: int = 1 << 20
    max_reported_skips: int = 20
    explain_preview_chars: int = 60
    jobs_chunk_records: int = 256
    jobs_window_per_worker: int = 2


CONFIG = CliConfig()


InputError = io.InputError
"""Bad input; the message names the file and line (``path:line: what``)."""


# --------------------------------------------------------------------------------------
# Reading JSONL (dsa_cast.io: every bad line is an InputError naming its file and line).
# --------------------------------------------------------------------------------------


def _id_key(value: object) -> str:
    """Ids compare as text, so ``17`` and ``"17"`` join."""
    return value if isinstance(value, str) else json.dumps(value)


class References:
    """The ``--answers`` file: joined by order (streamed) or by id (an id -> offset index).

    A record without the id field gets its 0-based record number as id (GSM8K files have none).
    """

    def __init__(
        self,
        path: str,
        answer_field: str,
        id_field: str,
        question_field: str,
        by_id: bool,
        fh: BinaryIO,
        skip_bad: bool = False,
        err: IO[str] | None = None,
    ) -> None:
        self.name = path
        self.answer_field, self.id_field, self.question_field = answer_field, id_field, question_field
        self.by_id = by_id
        self.fh = fh
        self.count = 0
        self.index: dict[str, tuple[int, int]] = {}  # id -> (byte offset, line number)
        if by_id:
            if not fh.seekable():
                raise InputError(
                    "joining by id reads the answers file twice, so it must be a "
                    "regular file (not a pipe or standard input); use --join order",
                    path,
                )
            self._build_index(skip_bad, err)
        else:
            self._stream = io.iter_jsonl(fh, path)

    def _build_index(self, skip_bad: bool, err: IO[str] | None) -> None:
        for line in io.iter_jsonl(self.fh, self.name):
            try:
                rec = self._checked(line)
            except InputError as e:  # skipped: outputs with that record's id then fail to join
                if not skip_bad:
                    raise
                print(f"skipped {e}", file=err or sys.stderr)
                continue
            key = _id_key(rec[self.id_field]) if self.id_field in rec else str(self.count)
            if key in self.index:
                raise InputError(f"duplicate id {key!r} (first at line {self.index[key][1]})", self.name, line.number)
            self.index[key] = (line.offset, line.number)
            self.count += 1

    def _checked(self, line: io.JsonLine) -> dict[str, Any]:
        if line.error is not None:
            raise line.error
        rec: dict[str, Any] = line.value
        if self.answer_field not in rec:
            raise InputError(
                f"no {self.answer_field!r} field (fields: {', '.join(rec) or 'none'}); use --ref-answer-field",
                self.name,
                line.number,
            )
        return rec

    def _decode_at(self, offset: int, lineno: int) -> dict[str, Any]:
        self.fh.seek(offset)
        line = next(io.iter_jsonl(self.fh, self.name, first_line=lineno, first_offset=offset), None)
        if line is None:
            raise InputError("the file changed while it was read", self.name, lineno)
        return self._checked(line)

    def lookup(self, where: str, rec_id: object) -> tuple[object, object, str]:
        """``(answer, question, "file:line")`` for the next record (order) or for ``rec_id``."""
        if self.by_id:
            key = _id_key(rec_id)
            hit = self.index.get(key)
            if hit is None:
                raise InputError(f"{where}: id {key!r} is not in {self.name}")
            offset, lineno = hit
            ref = self._decode_at(offset, lineno)
        else:
            line = next(self._stream, None)
            if line is None:
                raise InputError(f"{where}: no matching record in {self.name} (it has only {self.count} records)")
            self.count += 1
            lineno, ref = line.number, self._checked(line)  # a bad line fails this output only
        return ref[self.answer_field], ref.get(self.question_field), f"{self.name}:{lineno}"

    def leftover(self) -> bool:
        """Whether an order-joined file has records no output used."""
        return not self.by_id and next(self._stream, None) is not None


# --------------------------------------------------------------------------------------
# grade
# --------------------------------------------------------------------------------------


def _parsed(grade: Grade, text: str, rubric: Rubric) -> Completion:
    d = grade.detail
    if d is not None and d.parsed is not None:
        return d.parsed
    return parse(text, getattr(rubric, "schema", DSA))  # the seed rubric does not parse


def _item(grade: Grade, parsed: Completion) -> ItemResult:
    d = grade.detail
    verdicts = d.verdicts if d is not None else ()
    coherence = d.scores.get("coherence") if d is not None and "coherence" in grade.components else None
    return ItemResult(
        total=grade.total,
        max_total=grade.max_total,
        components=dict(grade.components),  # a plain dict pickles (worker processes)
        correct=grade.correct,
        issues=grade.issues,
        exact_format=parsed.exact_format,
        sections_present=tuple(dict.fromkeys(s.name for s in parsed.sections)),
        evidence_checked=len(verdicts),
        evidence_ok=sum(v.ok is True for v in verdicts),
        coherence=coherence,
    )


def _json_value(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _result_record(lineno: int, rec_id: object, g: Grade, item: ItemResult) -> dict[str, Any]:
    return {
        "line": lineno,
        "id": rec_id,
        "total": _json_value(g.total),
        "max_total": g.max_total,
        "correct": g.correct,
        "predicted": g.predicted,
        "components": {k: _json_value(v) for k, v in g.components.items()},
        "issues": list(g.issues),
        "exact_format": item.exact_format,
        "sections": list(item.sections_present),
        "claims": item.evidence_checked,
        "claims_true": item.evidence_ok,
    }


class _Progress:
    """A byte-based tqdm bar when tqdm is installed and wanted; otherwise nothing."""

    def __init__(self, mode: str, total: int | None, desc: str) -> None:
        self.bar = None
        self.done = 0
        want = mode == "on" or (
            mode == "auto" and total is not None and total >= CONFIG.progress_min_bytes and sys.stderr.isatty()
        )
        if want:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr)

    def to(self, position: int) -> None:
        """Advance to byte ``position`` of the input."""
        if self.bar is not None and position > self.done:
            self.bar.update(position - self.done)
        self.done = max(self.done, position)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _binary(stdin: IO[str] | IO[bytes] | None) -> BinaryIO:
    """Standard input as bytes (its buffer, or the stream itself when it already reads bytes)."""
    stream = stdin if stdin is not None else sys.stdin
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    if buffer is not None:
        return buffer
    if isinstance(stream.read(0), bytes):
        return cast(BinaryIO, stream)  # it reads bytes
    import io as _stdio

    return _stdio.BytesIO(cast(IO[str], stream).read().encode("utf-8", "surrogateescape"))  # it reads str


def _regular_size(path: str) -> int | None:
    """The size of a regular file (for the progress bar); None for stdin, pipes, devices."""
    if path == io.STDIN:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _out_dir(a: argparse.Namespace) -> Path:
    if a.out:
        out_dir = Path(a.out)
    else:
        stem = "stdin" if a.outputs == io.STDIN else Path(a.outputs).stem
        out_dir = Path.cwd() / f"{stem}.graded"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a directory (--out names the output directory)", out_dir)
    return out_dir


def _grade_command(a: argparse.Namespace, out: IO[str], err: IO[str], stdin: IO[str] | None = None) -> int:
    name = a.outputs
    rubric = get_rubric(a.rubric)
    out_dir = _out_dir(a)
    results_path, summary_path = out_dir / "results.jsonl", out_dir / "summary.json"
    inputs = [p for p in (name, a.answers) if p is not None]
    for target in (results_path, summary_path):  # never write over a file this run reads
        io.refuse_inputs(target, inputs)
    if a.answers == io.STDIN and name == io.STDIN:
        raise InputError("the outputs and --answers cannot both be standard input ('-')")
    summary = Summary(ReportConfig(top_issues=a.top_issues))
    summary.declare_sections(getattr(rubric, "schema", DSA).sections)
    error: InputError | None = None
    progress = _Progress(a.progress, _regular_size(name), "stdin" if name == io.STDIN else Path(name).name)
    jobs = a.jobs if a.jobs is not None else available_cores()
    with contextlib.ExitStack() as stack:
        stack.callback(progress.close)
        fh = stack.enter_context(io.open_input(name, stdin=_binary(stdin) if name == io.STDIN else None))
        lines = io.iter_lines(fh, name)
        first = next(lines, None)
        lines = itertools.chain([first] if first is not None else [], lines)
        refs: References | None = None
        if a.answers:
            try:
                refs = _open_references(a, first, name, stack, stdin, err)
            except InputError as e:  # a bad answers file: nothing graded, the summary says why
                error, lines = e, iter(())
        out_dir.mkdir(parents=True, exist_ok=True)
        res = stack.enter_context(io.atomic_output(results_path, inputs=inputs))
        chunks = _chunks(_jobs(a, refs, lines, name, progress), (rubric, a, name), CONFIG.jobs_chunk_records)
        graded = ordered_map(_score_chunk, chunks, jobs=jobs, window=jobs * CONFIG.jobs_window_per_worker)
        reported, stopped = _collect(graded, summary, res, a.skip_bad, err)
        error = error or stopped
        if error is None and refs is not None and refs.leftover():
            print(f"warning: {refs.name} has records no output used (joined by order)", file=err)
    if summary.n_skipped > reported:
        print(f"skipped {summary.n_skipped - reported} more bad lines", file=err)
    data = summary.to_dict()
    data.update({"rubric": rubric.name, "outputs": str(name), "complete": error is None})
    if error is not None:
        data["error"] = str(error)
    io.atomic_write_text(summary_path, json.dumps(data, indent=2) + "\n", inputs=inputs)
    if error is not None:
        raise error
    print(format_table(summary), file=out)
    written = [] if a.no_plots else write_plots(summary, out_dir, rubric)
    print(f"\nwrote {results_path} and {summary_path}" + "".join(f", {p.name}" for p in written), file=out)
    if not a.no_plots and not written:
        print("(no plots: install matplotlib, e.g. pip install 'dsa-cast[plot]')", file=out)
    return EXIT_OK


def _open_references(
    a: argparse.Namespace,
    first: io.RawLine | None,
    name: str,
    stack: contextlib.ExitStack,
    stdin: IO[str] | None,
    err: IO[str],
) -> References:
    """The ``--answers`` file, joined by id or by order (``--join auto``: by id when the first output
    record holds the id field); InputError for a bad answers file."""
    ref_in = _binary(stdin) if a.answers == io.STDIN else None
    ref_fh = stack.enter_context(io.open_input(a.answers, stdin=ref_in))
    join = a.join
    if join == "auto":  # by id when the first output record has the id field
        head = io.parse_line(first, name) if first is not None else None
        join = "id" if head is not None and head.error is None and a.id_field in head.value else "order"
    return References(
        a.answers, a.ref_answer_field, a.id_field, a.question_field, join == "id", ref_fh, a.skip_bad, err
    )


def _collect(
    graded: Generator[list[tuple[str, ItemResult] | InputError], None, None],
    summary: Summary,
    res: IO[str],
    skip_bad: bool,
    err: IO[str],
) -> tuple[int, InputError | None]:
    """Write each graded line to ``res`` and add it to ``summary``, in input order; a bad line is
    skipped (``skip_bad``: the first few reported on ``err``) or stops the run. Returns the number
    of skips reported and the error that stopped the run (None when it ran to the end)."""
    reported = 0
    for results in graded:
        for r in results:
            if isinstance(r, InputError):
                if not skip_bad:
                    graded.close()  # stops the workers; later lines are not graded
                    return reported, r
                summary.n_skipped += 1
                if reported < CONFIG.max_reported_skips:
                    print(f"skipped {r}", file=err)
                    reported += 1
                continue
            line, item = r
            summary.add(item)
            res.write(line)
    return reported, None


@dataclass(frozen=True, slots=True)
class _Job:
    """One record ready to grade: what a worker process needs, nothing more."""

    lineno: int
    where: str
    rec_id: object
    text: str
    answer: object
    question: str | None
    source: str


_Work = _Job | InputError | io.RawLine
"""A chunk item: a prepared record, its error, or a raw line left to the worker."""


def _jobs(
    a: argparse.Namespace, refs: References | None, lines: Iterator[io.RawLine], path: str, progress: _Progress
) -> Iterator[_Work]:
    """The file's non-blank lines in order, as work for :func:`_score_chunk`.

    Runs in the main process. With ``--answers`` the records are parsed, checked and joined here
    (the join must see them in order) and sent as a :class:`_Job` or the :class:`InputError`
    they raised; without, the raw line is sent and the worker does all of it, so the main
    process only reads and writes (it would otherwise bound the speed-up of many workers)."""
    for raw in lines:
        progress.to(raw.offset + raw.size)
        if refs is None and raw.error is None:
            yield raw
            continue
        line = io.parse_line(raw, path)
        if line.error is not None:
            yield line.error
            continue
        try:
            yield _prepare_record(a, refs, path, line.number, line.value)
        except InputError as e:
            yield e


def _chunks(
    items: Iterator[_Work], context: tuple[Rubric, argparse.Namespace, str], size: int
) -> Iterator[tuple[tuple[Rubric, argparse.Namespace, str], list[_Work]]]:
    chunk: list[_Work] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield context, chunk
            chunk = []
    if chunk:
        yield context, chunk


def _score_chunk(
    task: tuple[tuple[Rubric, argparse.Namespace, str], list[_Work]],
) -> list[tuple[str, ItemResult] | InputError]:
    """Grade a chunk (in a worker process or in this one): per item, its ``results.jsonl`` line
    and summary entry, or the :class:`InputError` to report at its place."""
    (rubric, a, path), items = task
    out: list[tuple[str, ItemResult] | InputError] = []
    for job in items:
        if isinstance(job, io.RawLine):  # a raw line: parse and check it here
            line = io.parse_line(job, path)
            try:
                if line.error is not None:
                    raise line.error
                job = _prepare_record(a, None, path, line.number, line.value)
            except InputError as e:
                out.append(e)
                continue
        if isinstance(job, InputError):
            out.append(job)
            continue
        try:
            g = rubric.score(job.text, job.answer, job.question, True)
        except (TypeError, ValueError) as e:
            out.append(InputError(f"{job.where}: reference ({job.source}): {e}"))
            continue
        item = _item(g, _parsed(g, job.text, rubric))
        out.append((json.dumps(_result_record(job.lineno, job.rec_id, g, item)) + "\n", item))
    return out


def _prepare_record(
    a: argparse.Namespace, refs: References | None, path: str, lineno: int, rec: dict[str, Any]
) -> _Job:
    where = f"{path}:{lineno}"
    if a.completion_field not in rec:
        raise InputError(
            f"{where}: no {a.completion_field!r} field (fields: {', '.join(rec) or 'none'}); use --completion-field"
        )
    try:
        text = completion_text(rec[a.completion_field])
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: field {a.completion_field!r}: {e}") from e
    rec_id = rec.get(a.id_field)
    question = rec.get(a.question_field)
    if refs is not None:
        if refs.by_id and a.id_field not in rec:
            raise InputError(f"{where}: no {a.id_field!r} field to join on (--join id)")
        answer, ref_question, source = refs.lookup(where, rec_id)
        if question is None:
            question = ref_question
    else:
        answer, source = rec.get(a.answer_field), f"field {a.answer_field!r}"
    if not isinstance(question, str):
        question = None
    return _Job(lineno, where, rec_id, text, answer, question, source)


# --------------------------------------------------------------------------------------
# explain
# --------------------------------------------------------------------------------------


def _preview(s: str) -> str:
    s = " ".join(s.split())
    n = CONFIG.explain_preview_chars
    return json.dumps(s if len(s) <= n else s[: n - 3] + "...")


def _fmt_value(v: Fraction | None) -> str:
    if v is None:
        return "-"
    from dsa_cast.numbers import format_value

    return format_value(v)


def _explain_text(g: Grade, text: str, rubric: Rubric) -> str:
    d = g.detail
    lines = [f"rubric: {g.rubric}    total: {g.total:.3f} / {g.max_total:g}"]
    ref = d.reference if d is not None else None
    lines.append(f"correct: {g.correct}    predicted: {g.predicted}    reference: {_fmt_value(ref)}")
    lines.append("components:")
    scores = dict(d.scores) if d is not None else {}
    for name, value in g.components.items():
        raw = scores.get(name)
        lines.append(f"  {name:<14}{value:8.3f}" + (f"   (score {raw:.3f})" if raw is not None else ""))
    extra = {k: v for k, v in scores.items() if k not in g.components}
    if extra:
        lines.append("details: " + ", ".join(f"{k}={v:g}" for k, v in extra.items()))
    c = _parsed(g, text, rubric)
    lines.append(f"parse: exact_format={c.exact_format}")
    for kind, blocks in (("reasoning", c.reasoning_blocks), ("answer", c.answer_blocks)):
        if not blocks:
            lines.append(f"  {kind}: none")
        for i, b in enumerate(blocks):
            state = "closed" if b.closed else "UNCLOSED"
            lines.append(f"  {kind}[{i}] chars {b.start}-{b.end} {state}: {_preview(b.body)}")
            if kind == "reasoning" and i == 0:
                for s in c.sections:
                    lines.append(f"    {s.name:<13} at {s.heading_start}: {_preview(s.body)}")
    if d is not None and d.extraction is not None:
        ex = d.extraction
        lines.append(
            f"answer extraction: value={_fmt_value(ex.value)} text={ex.text!r} percent={ex.percent} issue={ex.issue}"
        )
    if g.issues:
        lines.append("issues:")
        located: dict[str, list[str]] = {}
        for f in c.findings:
            located.setdefault(str(f.code), []).append(f"{f.start}-{f.end}" + (f" ({f.section})" if f.section else ""))
        for code in g.issues:
            where = located.get(str(code))
            lines.append(f"  {code}" + (f"  at {', '.join(where)}" if where else ""))
    else:
        lines.append("issues: none")
    verdicts = d.verdicts if d is not None else ()
    if verdicts:
        lines.append(f"claims ({len(verdicts)}):")
        mark = {True: "ok   ", False: "FALSE", None: "n/a  "}
        for v in verdicts:
            why = f"  [{v.reason}]" if v.reason else ""
            lines.append(
                f"  {mark[v.ok]} {v.claim.kind:<10} {v.claim.expr} = {v.claim.stated}  -> {_fmt_value(v.value)}{why}"
            )
    else:
        lines.append("claims: none checked")
    return "\n".join(lines)


def _explain_json(g: Grade, text: str, rubric: Rubric) -> dict[str, Any]:
    d = g.detail
    c = _parsed(g, text, rubric)
    return {
        "rubric": g.rubric,
        "total": g.total,
        "max_total": g.max_total,
        "correct": g.correct,
        "predicted": g.predicted,
        "reference": _fmt_value(d.reference) if d is not None and d.reference is not None else None,
        "components": dict(g.components),
        "scores": dict(d.scores) if d is not None else {},
        "issues": list(g.issues),
        "exact_format": c.exact_format,
        "blocks": {
            kind: [{"start": b.start, "end": b.end, "closed": b.closed} for b in blocks]
            for kind, blocks in (("reasoning", c.reasoning_blocks), ("answer", c.answer_blocks))
        },
        "sections": [{"name": s.name, "heading_start": s.heading_start, "body": s.body} for s in c.sections],
        "findings": [{"code": str(f.code), "start": f.start, "end": f.end, "section": f.section} for f in c.findings],
        "claims": [
            {
                "kind": v.claim.kind,
                "expr": v.claim.expr,
                "stated": v.claim.stated,
                "ok": v.ok,
                "value": _fmt_value(v.value) if v.value is not None else None,
                "reason": v.reason,
            }
            for v in (d.verdicts if d is not None else ())
        ],
    }


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8: invalid byte 0x{raw[e.start]:02x} at offset {e.start}", where) from None


@overload
def _argument(value: str, where: str) -> str: ...
@overload
def _argument(value: None, where: str) -> None: ...
def _argument(value: str | None, where: str) -> str | None:
    """A command-line argument as text; bytes that are not UTF-8 (kept by Python as surrogate
    escapes) are an input error, not a crash when printed."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: the bytes given were not valid text
        return _utf8(os.fsencode(value), where)
    return value


def _emit(out: IO[str], text: str) -> None:
    """Print ``text``; characters the stream cannot encode are written as escapes."""
    encoding = getattr(out, "encoding", None)
    if encoding:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    print(text, file=out)


def _explain_command(a: argparse.Namespace, stdin: IO[str] | None, out: IO[str], err: IO[str]) -> int:
    if a.completion in (None, io.STDIN):
        text = _utf8(_binary(stdin).read(), "standard input")
    else:
        text = _argument(a.completion, "the completion argument")
    answer = _argument(a.answer, "--answer")
    question = _argument(a.question, "--question")
    if not text.strip():  # e.g. "$(cat missing.txt)" expands to nothing: say so, then grade it
        where = "standard input" if a.completion in (None, "-") else "the COMPLETION argument"
        print(
            f"warning: the completion is empty ({where} holds {'only whitespace' if text else 'nothing'}); "
            "it is graded as an empty answer",
            file=err,
        )
    rubric = get_rubric(a.rubric)
    try:
        g = rubric.score(text, answer, question, True)
    except (TypeError, ValueError) as e:
        raise InputError(f"--answer: {e}") from e
    if a.json:
        _emit(out, json.dumps(_explain_json(g, text, rubric), indent=2))
    else:
        _emit(out, _explain_text(g, text, rubric))
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dsa_cast", description="Grade structured-reasoning (DSA) completions.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{grade,explain}")
    g = sub.add_parser("grade", help="grade a JSONL file of model outputs and write a report")
    g.add_argument("outputs", help="JSONL file, one model output per line ('-': standard input)")
    g.add_argument("--answers", help="JSONL file of references (GSM8K style: '... #### 42')")
    g.add_argument("--rubric", default="dsa-cast", choices=sorted(RUBRICS), help="default: dsa-cast")
    g.add_argument("--out", help="output directory (default: ./<OUTPUTS stem>.graded)")
    g.add_argument("--completion-field", default="completion", help="default: completion")
    g.add_argument("--answer-field", default="answer", help="reference field of an output record (default: answer)")
    g.add_argument(
        "--ref-answer-field", default="answer", help="reference field of an --answers record (default: answer)"
    )
    g.add_argument("--question-field", default="question", help="default: question")
    g.add_argument("--id-field", default="id", help="default: id")
    g.add_argument(
        "--join",
        default="auto",
        choices=("auto", "id", "order"),
        help="how --answers lines up with the outputs (auto: id when the first output "
        "record has the id field, else order)",
    )
    g.add_argument("--skip-bad", action="store_true", help="skip bad lines (counted) instead of stopping")
    g.add_argument("--no-plots", action="store_true", help="do not draw PNGs")
    g.add_argument(
        "--progress",
        default="auto",
        choices=("auto", "on", "off"),
        help="progress bar (needs tqdm; auto: files >= 1 MiB on a terminal)",
    )
    g.add_argument(
        "--top-issues",
        type=_count,
        default=ReportConfig.top_issues,
        help="issue codes listed in the table (an integer >= 0)",
    )
    g.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"worker processes (default: all cores, {available_cores()} here); 1 grades in this process",
    )
    e = sub.add_parser("explain", help="show how one completion is graded")
    e.add_argument("completion", nargs="?", help="the completion text; '-' or omitted: read stdin")
    e.add_argument("--answer", help="the reference (e.g. 42, or a GSM8K solution)")
    e.add_argument("--question", help="the problem text (grounds Evidence claims)")
    e.add_argument("--rubric", default="dsa-cast", choices=sorted(RUBRICS))
    e.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 usage or input error)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if a.command == "grade":
            return _grade_command(a, out, err, stdin)
        return _explain_command(a, stdin, out, err)
    except (InputError, io.OutputError) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except OSError as exc:  # writing the outputs (a full disk, no permission)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=err)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
