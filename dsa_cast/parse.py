"""Linear-time parser for "reasoning block + answer block" completions.

:func:`parse` scans a completion once for the schema's tags and once for section headings (two
regular expressions whose every quantifier is possessive or bounded, see :mod:`dsa_cast.schema`),
then builds a frozen :class:`Completion` holding the blocks, the sections of the first reasoning
block, and machine-readable issue codes. The exact rules are in ``docs/format.md``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import accumulate, chain, islice, repeat
from operator import add, and_, is_, lt, not_
from typing import Any, TypeAlias, TypeVar

from dsa_cast.schema import DSA, Schema

__all__ = ["Block", "Code", "Completion", "Finding", "Section", "parse"]

_NONSPACE = re.compile(r"\S")
_SEPARATOR_TABLE = str.maketrans(" -", "__")  # Schema.heading_key's separator rule, for str.translate


class Code(enum.StrEnum):
    """Issue codes, in the (fixed) order :attr:`Completion.issues` lists them.

    Codes name the *role* of a block ("reasoning", "answer") whatever the schema's tag names.
    """

    MISSING_REASONING = "missing_reasoning"
    UNCLOSED_REASONING = "unclosed_reasoning"
    DUPLICATE_REASONING = "duplicate_reasoning"
    MISSING_ANSWER = "missing_answer"
    UNCLOSED_ANSWER = "unclosed_answer"
    DUPLICATE_ANSWER = "duplicate_answer"
    EMPTY_ANSWER = "empty_answer"
    ANSWER_BEFORE_REASONING = "answer_before_reasoning"
    STRAY_CLOSING_TAG = "stray_closing_tag"
    NESTED_TAG = "nested_tag"
    TRUNCATED = "truncated"
    TEXT_BEFORE = "text_before"
    TEXT_BETWEEN = "text_between"
    TEXT_AFTER = "text_after"
    HEADING_OUTSIDE_REASONING = "heading_outside_reasoning"
    TEXT_BEFORE_SECTIONS = "text_before_sections"
    MISSING_SECTION = "missing_section"
    DUPLICATE_SECTION = "duplicate_section"
    SECTION_OUT_OF_ORDER = "section_out_of_order"
    EMPTY_SECTION = "empty_section"


_CODE_ORDER = {code: i for i, code in enumerate(Code)}
_CODES = tuple(Code)  # index -> code (iterating an enum per call is slow)


@dataclass(frozen=True)
class Block:
    """One tag block. ``body`` is the raw text between the tags: ``text[body_start:body_end]``."""

    start: int  # offset of the opening tag
    end: int  # offset just after the closing tag; len(text) when unclosed
    body_start: int  # offset just after the opening tag
    body_end: int  # offset of the closing tag; len(text) when unclosed
    body: str
    closed: bool


@dataclass(frozen=True)
class Section:
    """One heading and its body inside the first reasoning block (absolute offsets)."""

    name: str  # canonical name from the schema, e.g. "Sanity_check"
    heading_start: int  # offset of the heading's first character (after leading blanks)
    body_start: int  # offset just after the heading (after the colon and closing emphasis)
    body_end: int  # start of the next heading's line, or the reasoning body's end
    body: str  # text[body_start:body_end].strip()
    heading: str = ""  # the heading as written, text[heading_start:body_start], e.g. "**Plan:**"


@dataclass(frozen=True)
class Finding:
    """Where one issue was seen: ``text[start:end]``; ``section`` names the section when relevant."""

    code: Code
    start: int
    end: int
    section: str | None = None


@dataclass(frozen=True)
class Completion:
    """A parsed completion: blocks, sections of the first reasoning block, and issues."""

    text: str
    schema: Schema
    reasoning_blocks: tuple[Block, ...]
    answer_blocks: tuple[Block, ...]
    sections: tuple[Section, ...]  # in order of appearance in the first reasoning block
    issues: tuple[str, ...]  # Code values (Code is a StrEnum), each at most once, in Code order
    # Located occurrences, sorted by (Code order, start); at most schema.max_findings_per_code per code.
    findings: tuple[Finding, ...] = ()
    # True numbers found; the tuples above keep at most schema.max_blocks / max_sections entries.
    n_reasoning_blocks: int = 0
    n_answer_blocks: int = 0
    n_sections: int = 0

    @property
    def reasoning(self) -> Block | None:
        """The first reasoning block, or None."""
        return self.reasoning_blocks[0] if self.reasoning_blocks else None

    @property
    def answer(self) -> Block | None:
        """The first answer block, or None."""
        return self.answer_blocks[0] if self.answer_blocks else None

    def section(self, name: str) -> Section | None:
        """The first section called ``name`` (any spelling the schema accepts), or None if absent.

        Raises ValueError for a name that is not one of the schema's sections (catches typos).
        """
        canonical = self.schema.patterns.heading_keys.get(self.schema.heading_key(name))
        if canonical is None:
            raise ValueError(f"section name {name!r} is not one of {self.schema.sections}")
        for sec in self.sections:
            if sec.name == canonical:
                return sec
        return None

    @property
    def exact_format(self) -> bool:
        """One closed reasoning block with every section once, in order, then one closed answer
        block, only whitespace outside them, and no issue at all."""
        return (
            not self.issues
            and len(self.reasoning_blocks) == 1
            and len(self.answer_blocks) == 1
            and self.reasoning_blocks[0].closed
            and self.answer_blocks[0].closed
            and self.reasoning_blocks[0].end <= self.answer_blocks[0].start
            and tuple(s.name for s in self.sections) == self.schema.sections
        )


class _Findings:
    """Collects findings: every code seen, and up to ``cap`` located findings per code."""

    __slots__ = ("cap", "seen", "located")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen: dict[Code, int] = {}
        self.located: list[tuple[int, int, int, str | None]] = []

    def add(self, code: Code, start: int, end: int, section: str | None = None) -> None:
        n = self.seen.get(code, 0)
        self.seen[code] = n + 1
        if n < self.cap:
            self.located.append((_CODE_ORDER[code], start, end, section))

    def issues(self) -> tuple[Code, ...]:
        return tuple(sorted(self.seen, key=_CODE_ORDER.__getitem__))

    def findings(self) -> tuple[Finding, ...]:
        codes = _CODES
        return tuple(Finding(codes[c], s, e, name) for c, s, e, name in sorted(self.located, key=_sort_key))


def _sort_key(item: tuple[int, int, int, str | None]) -> tuple[int, int, int]:
    # Stable sort: ties (e.g. missing sections, all located at one offset) keep schema order.
    return item[0], item[1], item[2]


def _text_in(text: str, start: int, end: int) -> re.Match[str] | None:
    """First non-whitespace character in text[start:end], or None (no copy of the slice)."""
    return _NONSPACE.search(text, start, end) if start < end else None


def parse(text: str, schema: Schema = DSA) -> Completion:
    """Parse ``text`` against ``schema`` in time linear in ``len(text)``.

    Never raises for a ``str``; raises TypeError for any other ``text`` or a non-Schema ``schema``.

    >>> c = parse("<reasoning>\\nPlan:\\nAdd.\\nReasoning:\\n2 + 2.\\nEvidence:\\nCALC: 2 + 2 = 4\\n"
    ...           "Sanity_check:\\nSmall.\\n</reasoning>\\n<answer>4</answer>")
    >>> c.exact_format, [s.name for s in c.sections], c.answer_blocks[0].body
    (True, ['Plan', 'Reasoning', 'Evidence', 'Sanity_check'], '4')
    >>> [str(code) for code in parse("<reasoning>Plan: x</reasoning>").issues]
    ['missing_answer', 'missing_section']
    """
    if not isinstance(text, str):
        raise TypeError(f"parse(): argument 'text' must be str, got {type(text).__name__}")
    if not isinstance(schema, Schema):
        raise TypeError(f"parse(): argument 'schema' must be a Schema, got {type(schema).__name__}")
    return completion_from_scan(text, schema, scan(text, schema))


# A scan's result, its spans and headings are plain tuples with their fields documented here, not
# NamedTuples: a tuple subclass costs its allocation, unspecialised indexing and deallocation,
# measured at about 2.5 % of dsa-cast grading for spans and headings (valgrind instruction counts
# on the benchmark corpus) and 2 % of format-rubric grading for the Scan alone (wall clock).

Span: TypeAlias = tuple[bool, int, int, int, int, bool]
"""One tag block as a scan finds it, ``(is_answer, start, end, body_start, body_end, closed)``:
plain offsets, no text copied (see :class:`Block`)."""

Heading: TypeAlias = tuple[int, int, int, str]
"""One heading kept inside the first reasoning body, ``(line_start, head, body_start, name)``:
where its line starts, where the heading itself starts, where its body starts (the heading's
end), its canonical name."""


Scan: TypeAlias = tuple[list[Span], list[Span], list[Heading], int, _Findings, int]
"""What one :func:`scan` finds, ``(reasoning, answers, headings, hi, found, n_sections)``: the
reasoning and answer spans; the headings kept inside the first reasoning body (at most
``max_sections + 1``); that body's end ``hi`` (``len(text) + 1`` without one); the findings; the
true number of sections. The rubrics read it directly; :func:`parse` turns it into a
:class:`Completion`."""


def scan(text: str, schema: Schema) -> Scan:
    """Both passes of :func:`parse` over ``text`` (already type-checked), no dataclass built."""
    found = _Findings(schema.max_findings_per_code)
    r_spans, a_spans = _block_pass(text, schema, found)
    inside, count, hi = _section_pass(text, schema, found, r_spans[0] if r_spans else None)
    return r_spans, a_spans, inside, hi, found, count


def _block_pass(text: str, schema: Schema, found: _Findings) -> tuple[list[Span], list[Span]]:
    """Pass 1 of :func:`scan`: the reasoning and answer blocks, and every block-level issue
    (missing, unclosed, duplicate, empty answer, order, nesting, text outside the blocks)."""
    n = len(text)
    cap = schema.max_findings_per_code
    blocks = _blocks(text, schema, found)
    r_spans = [b for b in blocks if not b[0]]
    a_spans = [b for b in blocks if b[0]]

    _block_issues(found, r_spans, Code.MISSING_REASONING, Code.UNCLOSED_REASONING, Code.DUPLICATE_REASONING, n, cap)
    _block_issues(found, a_spans, Code.MISSING_ANSWER, Code.UNCLOSED_ANSWER, Code.DUPLICATE_ANSWER, n, cap)
    a0 = a_spans[0] if a_spans else None
    if a0 is not None and not _text_in(text, a0[3], a0[4]):
        found.add(Code.EMPTY_ANSWER, a0[1], a0[2])
    if r_spans and a0 is not None and a0[1] < r_spans[0][1]:
        found.add(Code.ANSWER_BEFORE_REASONING, a0[1], a0[2])
    _outside_text(text, blocks, found, cap)
    return r_spans, a_spans


def _blocks(text: str, schema: Schema, found: _Findings) -> list[Span]:
    """Tags -> blocks, in order, with the stray-closing-tag, nested-tag and truncated findings. No
    nesting: inside a block only its own closing tag counts; every other tag there is nested_tag.
    A block is (is_answer, start, end, body_start, body_end, closed)."""
    n = len(text)
    cap = schema.max_findings_per_code
    blocks: list[Span] = []
    open_kind = 0  # 0 = outside; 1 = inside reasoning; 2 = inside answer
    open_start = open_body = 0
    stray = nested = 0
    for tag in schema.patterns.tags.finditer(text):
        kind = tag.lastindex  # 1 <r>, 2 <a>, 3 </r>, 4 </a>
        assert kind is not None  # every alternative of the tag pattern is a group
        if open_kind == 0:
            if kind <= 2:
                open_kind, open_start, open_body = kind, tag.start(), tag.end()
            else:
                if stray < cap:
                    found.add(Code.STRAY_CLOSING_TAG, tag.start(), tag.end())
                stray += 1
        elif kind == open_kind + 2:
            blocks.append((open_kind == 2, open_start, tag.end(), open_body, tag.start(), True))
            open_kind = 0
        else:
            if nested < cap:
                found.add(Code.NESTED_TAG, tag.start(), tag.end())
            nested += 1
    if open_kind:
        blocks.append((open_kind == 2, open_start, n, open_body, n, False))
        found.add(Code.TRUNCATED, n, n)
    return blocks


def _outside_text(text: str, blocks: list[Span], found: _Findings, cap: int) -> None:
    """Text before, between and after the blocks (stray tags and "< reasoning >" lookalikes count
    as text)."""
    n = len(text)
    prev_end = 0
    between = 0
    for i, (_, s, e, _, _, _) in enumerate(blocks):
        if s > prev_end:
            t = _NONSPACE.search(text, prev_end, s)
            if t:
                if i == 0:
                    found.add(Code.TEXT_BEFORE, t.start(), s)
                elif between < cap:
                    found.add(Code.TEXT_BETWEEN, t.start(), s)
                    between += 1
        prev_end = e
    t = _text_in(text, prev_end, n)
    if t:
        found.add(Code.TEXT_AFTER if blocks else Code.TEXT_BEFORE, t.start(), n)


def _section_pass(text: str, schema: Schema, found: _Findings, first: Span | None) -> tuple[list[Heading], int, int]:
    """Pass 2 of :func:`scan`: the sections of the ``first`` reasoning block and every section
    issue; returns the kept headings, the number of sections and the end of the first reasoning
    body (``len(text) + 1`` without one).

    Kept as one function: the heading loop threads eight counters from one heading to the next, and
    a helper per heading would pass and return them all on every grade's path (measured: about
    0.1 µs per heading, 3.9 headings per benchmark completion, some 0.3 % of a dsa-cast grade)
    while reading worse than the loop; the work before and after the loop is in helpers."""
    patterns = schema.patterns
    n = len(text)
    cap = schema.max_findings_per_code

    # --- Pass 2: headings. Those inside the first reasoning body make the sections; the section
    # issues (duplicate, out of order, empty) are decided in the same loop, each body when the next
    # heading (or the body's end) is known.
    lo, hi = (first[3], first[4]) if first else (n + 1, n + 1)
    keys = patterns.heading_keys
    canonical = dict(patterns.spelled)  # heading text as written -> canonical name (memo per call)
    inside: list[Heading] = []
    keep = schema.max_sections + 1  # a kept section's body ends at the next heading's line
    index = {name: i for i, name in enumerate(schema.sections)}
    seen: set[str] = set()
    highest = -1
    outside = dup = order = empty = count = 0
    prev: tuple[int, int, str] | None = None  # (heading_start, body_start, name) of the last inside
    at_start = patterns.heading_at.match(text)  # the scan pattern needs a newline or tag before
    matches = patterns.headings.finditer(text)
    # Numbered groups (1 line, 2 head, 3 name; see schema.Patterns) are cheaper than named ones.
    m: re.Match[str] | None
    for m in chain((at_start,), matches) if at_start else matches:
        written = m[3]
        name = canonical.get(written)
        if name is None:
            name = canonical[written] = keys[schema.heading_key(written)]
        line_start, end = m.start(1), m.end()
        if lo <= line_start and end <= hi:
            head = m.start(2)
            if prev is not None and not _text_in(text, prev[1], line_start):
                if empty < cap:
                    found.add(Code.EMPTY_SECTION, prev[0], line_start, prev[2])
                empty += 1
            if name in seen:
                if dup < cap:
                    found.add(Code.DUPLICATE_SECTION, head, end, name)
                dup += 1
            else:
                seen.add(name)
            i = index[name]
            if i < highest:
                if order < cap:
                    found.add(Code.SECTION_OUT_OF_ORDER, head, end, name)
                order += 1
            elif i > highest:
                highest = i
            count += 1
            if count <= keep:
                inside.append((line_start, head, end, name))
            prev = (head, end, name)
            if count >= keep and dup >= cap:
                # The kept sections are known and every duplicate is located: the rest of the body
                # can only add empty or out-of-order sections (until located cap times), headings to
                # n_sections and names seen (missing_section); _heading_tail reads it in C.
                count += _heading_tail(text, schema, found, prev, hi, highest, order, empty, index, seen)
                prev = None
                break
        else:
            if outside < cap:
                found.add(Code.HEADING_OUTSIDE_REASONING, m.start(2), end, name)
            elif line_start > hi:
                break  # every later heading is outside too: nothing left to report
            outside += 1
    else:
        m = None
    if m is not None and prev is None and first is not None:
        # The scan stopped inside the first reasoning body: go on after it (outside headings only).
        _headings_after(text, schema, found, hi, cap - outside, canonical)
    if prev is not None and not _text_in(text, prev[1], hi) and empty < cap:
        found.add(Code.EMPTY_SECTION, prev[0], hi, prev[2])
    _section_closing(text, schema, found, first, inside, seen)
    return inside, count, hi


def _headings_after(text: str, schema: Schema, found: _Findings, hi: int, left: int, canonical: dict[str, str]) -> None:
    """The first ``left`` headings from ``hi`` on (after the first reasoning body: all outside it)."""
    keys = schema.patterns.heading_keys
    for m in islice(schema.patterns.headings.finditer(text, hi), max(left, 0)):
        name = canonical.get(m[3]) or keys[schema.heading_key(m[3])]
        found.add(Code.HEADING_OUTSIDE_REASONING, m.start(2), m.end(), name)


def _section_closing(
    text: str, schema: Schema, found: _Findings, first: Span | None, inside: list[Heading], seen: set[str]
) -> None:
    """Text between the first reasoning tag and its first heading, and the sections never seen."""
    if first:
        lo, hi = first[3], first[4]
        t = _text_in(text, lo, inside[0][0] if inside else hi)
        if t:
            found.add(Code.TEXT_BEFORE_SECTIONS, t.start(), inside[0][1] if inside else hi)
    at = first[4] if first else len(text)
    for name in schema.sections:
        if name not in seen:
            found.add(Code.MISSING_SECTION, at, at, name)


_FEW = 64  # distinct heading lines or bodies handled one by one in _heading_tail; more: in C


_T = TypeVar("_T")


def _mapped(
    items: list[str], fn: Callable[[str], _T], c_level: Callable[[list[str]], list[_T]]
) -> tuple[Any, list[_T] | None]:
    """``fn`` of every item: ``(value, None)`` when it is the same for all (hostile text repeats
    itself), else ``(None, values)``. Computed once per distinct item when there are few, else by
    ``c_level(items)`` (maps over builtins: no Python step per item)."""
    distinct = set(items)
    out: list[_T] | None
    if len(distinct) > _FEW:
        out = c_level(items)
        one = set(out)
    else:
        table = {x: fn(x) for x in distinct}
        one = set(table.values())
        out = None if len(one) == 1 else list(map(table.__getitem__, items))
    return (one.pop(), None) if len(one) == 1 else (None, out)


def _indices(flags: list[bool], k: int) -> list[int]:
    """The first ``k`` positions of True in ``flags`` (searched in C)."""
    out: list[int] = []
    i = -1
    while len(out) < k:
        try:
            i = flags.index(True, i + 1)
        except ValueError:
            break
        out.append(i)
    return out


def _heading_tail(
    text: str,
    schema: Schema,
    found: _Findings,
    current: tuple[int, int, str],
    hi: int,
    highest: int,
    order: int,
    empty: int,
    index: dict[str, int],
    seen: set[str],
) -> int:
    """The rest of the first reasoning body after ``current`` (``(heading_start, end, name)``, the
    heading just read) up to ``hi``, for a body of hundreds of headings: one ``split`` in C yields
    every heading line and the text between two headings, and list operations find what the
    heading loop of :func:`scan` would still report (empty and out-of-order sections, until
    located ``max_findings_per_code`` times) with no Python step per heading. ``highest``,
    ``order`` and ``empty`` are the loop's state. Adds the names seen; returns the headings read."""
    cap = schema.max_findings_per_code
    tail = schema.tail_patterns
    head, pos, name = current
    # [text before the first heading, then per heading: its opening tag (None: a newline), its
    # line (blanks, decoration, name, colon), the text up to the next heading (or hi)]
    parts = tail.split.split(text[pos:hi])
    pre, tags, lines, bodies = parts[0], parts[1::3], parts[2::3], parts[3::3]
    n = len(lines)
    if not n:  # the current heading is the last one
        if empty < cap and not pre.strip():
            found.add(Code.EMPTY_SECTION, head, hi, name)
        return 0
    one, idx = _tail_sections(schema, lines, index)  # the section index of every heading
    names = schema.sections
    seen.update(names[i] for i in ({one} if idx is None else set(idx)))
    starts: list[int] = [pos + len(pre)]  # where each heading's match starts, as far as needed

    def at(i: int) -> re.Match[str]:
        """The i-th heading as the heading loop would have matched it."""
        k = len(starts) - 1
        if i > k:
            prefix = [1 if t is None else len(t) for t in tags[k:i]]
            starts.extend(
                accumulate(map(add, prefix, map(add, map(len, lines[k:i]), map(len, bodies[k:i]))), initial=starts[-1])
            )
            del starts[k + 1]  # accumulate repeats its initial value
        m = schema.patterns.headings.match(text, starts[i], hi)
        assert m is not None  # starts[i] is where the heading loop matched it
        return m

    def name_of(i: int) -> str:
        return names[one if idx is None else idx[i]]

    if empty < cap:
        _tail_empty(found, cap - empty, (head, name, starts[0], hi), pre, tags, bodies, at, name_of)
    if order < cap:
        _tail_order(found, cap - order, highest, one, idx, n, at, name_of)
    return n


def _tail_sections(schema: Schema, lines: list[str], index: dict[str, int]) -> tuple[Any, list[int] | None]:
    """The section index of every heading line of :func:`_heading_tail`: ``(i, None)`` when they
    are all section ``i``, else ``(None, indices)``."""
    keys = schema.patterns.heading_keys
    chars = schema.tail_patterns.strip  # a heading line is its name (letters or digits at both ends) within these

    def section(written: str) -> int:
        return index[keys[schema.heading_key(written.strip(chars))]]

    def by_name(items: list[str]) -> list[int]:  # many distinct lines: strip them in C, then per name
        v, out = _mapped(list(map(str.strip, items, repeat(chars))), section, lambda ws: list(map(section, ws)))
        return [v] * len(items) if out is None else out

    return _mapped(lines, section, by_name)


def _tail_empty(
    found: _Findings,
    left: int,
    where: tuple[int, str, int, int],
    pre: str,
    tags: list[str | None],
    bodies: list[str],
    at: Callable[[int], re.Match[str]],
    name_of: Callable[[int], str],
) -> None:
    """The empty sections of :func:`_heading_tail`, at most ``left``: the current heading's
    (``where`` = its start, its name, where the first tail heading starts, and ``hi``) and each
    tail heading's. A body is empty when the text up to the next heading is whitespace and that
    heading follows a newline (its tag is None); the last body runs to hi."""
    head, name, first_start, hi = where
    n = len(bodies)
    all_blank, blank = _mapped(bodies, lambda b: not b.strip(), lambda bs: list(map(not_, map(str.strip, bs))))
    by_newline = set(tags) == {None}
    newline = None if by_newline else list(map(is_, tags, repeat(None)))
    if (newline is None or newline[0]) and not pre.strip():
        found.add(Code.EMPTY_SECTION, head, first_start + 1, name)
        left -= 1
    if blank is None and by_newline:
        events: Iterable[int] = range(min(n, left)) if all_blank else ()
    else:
        blank = [all_blank] * n if blank is None else blank
        after = [True] * n if newline is None else newline[1:] + [True]
        events = _indices(list(map(and_, blank, after)), left)
    for i in events:
        m = at(i)
        found.add(Code.EMPTY_SECTION, m.start(2), at(i + 1).start() + 1 if i + 1 < n else hi, name_of(i))


def _tail_order(
    found: _Findings,
    left: int,
    highest: int,
    one: int | None,
    idx: list[int] | None,
    n: int,
    at: Callable[[int], re.Match[str]],
    name_of: Callable[[int], str],
) -> None:
    """The out-of-order sections of :func:`_heading_tail`, at most ``left``: each tail heading
    whose section comes before the highest one seen before it (``highest`` before the tail;
    ``one``: the section of every tail heading when they are all the same, else ``idx``)."""
    events: Iterable[int]
    if idx is None:  # one section throughout: all below the highest before, or none
        events = range(min(n, left)) if one is not None and one < highest else ()
    else:  # below the highest section before it
        events = _indices(list(map(lt, idx, accumulate(idx, max, initial=highest))), left)
    for i in events:
        m = at(i)
        found.add(Code.SECTION_OUT_OF_ORDER, m.start(2), m.end(), name_of(i))


def completion_from_scan(text: str, schema: Schema, scanned: Scan) -> Completion:
    """The :class:`Completion` of one :func:`scan`."""
    r_spans, a_spans, inside, hi, found, count = scanned
    reasoning = tuple([Block(s, e, bs, be, text[bs:be], c) for _, s, e, bs, be, c in r_spans[: schema.max_blocks]])
    answers = tuple([Block(s, e, bs, be, text[bs:be], c) for _, s, e, bs, be, c in a_spans[: schema.max_blocks]])
    n_kept = len(inside)
    sections = [
        Section(
            name,
            head,
            body_start,
            body_end := inside[i + 1][0] if i + 1 < n_kept else hi,
            text[body_start:body_end].strip(),
            text[head:body_start],
        )
        for i, (_, head, body_start, name) in enumerate(inside[: schema.max_sections])
    ]
    return Completion(
        text=text,
        schema=schema,
        reasoning_blocks=reasoning,
        answer_blocks=answers,
        sections=tuple(sections),
        issues=found.issues(),
        findings=found.findings(),
        n_reasoning_blocks=len(r_spans),
        n_answer_blocks=len(a_spans),
        n_sections=count,
    )


def first_section_bodies(text: str, schema: Schema, inside: list[Heading], hi: int) -> dict[str, str]:
    """Stripped body of the first kept section of each name (what ``Completion.sections``
    would hold for it), straight from a :func:`scan`."""
    out: dict[str, str] = {}
    kept = inside[: schema.max_sections]
    n_kept = len(inside)
    for i, (_, _, body_start, name) in enumerate(kept):
        if name not in out:
            out[name] = text[body_start : inside[i + 1][0] if i + 1 < n_kept else hi].strip()
    return out


def scan_is_exact(schema: Schema, scanned: Scan, issues: tuple[Code, ...]) -> bool:
    """:attr:`Completion.exact_format` of one :func:`scan` (``issues``: its findings' codes)."""
    r_spans, a_spans, inside, _, _, _ = scanned
    return (
        not issues
        and len(r_spans) == 1
        and len(a_spans) == 1
        and r_spans[0][5]
        and a_spans[0][5]
        and r_spans[0][2] <= a_spans[0][1]
        and tuple([x[3] for x in inside[: schema.max_sections]]) == schema.sections
    )


def _block_issues(
    found: _Findings,
    spans: list[Span],
    missing: Code,
    unclosed: Code,
    duplicate: Code,
    n: int,
    cap: int,
) -> None:
    """Missing / duplicate / unclosed blocks of one kind (spans as built in :func:`parse`)."""
    if not spans:
        found.add(missing, n, n)
        return
    for _, start, end, _, _, _ in spans[1 : cap + 1]:
        found.add(duplicate, start, end)
    if not spans[-1][5]:  # only the last block of all can be unclosed
        found.add(unclosed, spans[-1][1], spans[-1][2])
