"""Output-format schemas: which tags delimit the blocks and which section headings are expected.

A :class:`Schema` is a frozen, hashable description of a "reasoning block + answer block" format.
The parser (:mod:`dsa_cast.parse`) takes one, so the same code grades the DSA format
(``<reasoning>`` with ``Plan:`` / ``Reasoning:`` / ``Evidence:`` / ``Sanity_check:``) and
``<think>``-style formats. The matching rules each option controls are documented in
``docs/format.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

__all__ = ["DSA", "THINK", "Schema"]

_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_SECTION_NAME = re.compile(r"[A-Za-z0-9]+(?:[ _-][A-Za-z0-9]+)*")
_SEPARATORS = re.compile(r"[ _-]")


@dataclass(frozen=True)
class Patterns:
    """Compiled, provably linear patterns derived from a schema (built once per schema): what
    :mod:`dsa_cast.parse` reads through :attr:`Schema.patterns`. Internal to the package; the
    fields may change with the parser."""

    tags: re.Pattern[str]
    # Both heading patterns have groups 1 = line (from the leading blanks), 2 = head (the heading
    # itself), 3 = name (the section name as written); the parser reads them by number.
    headings: re.Pattern[str]  # a newline or opening tag, then a heading
    heading_at: re.Pattern[str]  # a heading right at the match position (for offset 0)
    # ``headings`` with one group, the name as written: ``findall`` counts the headings of a
    # stretch and collects their names in C (the parser's path once every heading issue is
    # already reported and located ``max_findings_per_code`` times).
    heading_names: re.Pattern[str]
    heading_keys: dict[str, str]  # normalised heading text -> canonical section name
    # Each canonical name as written -> itself (a name always normalises to its own key): the
    # parser's per-call memo of written headings starts from it, so headings written exactly as
    # the schema names them need no normalisation.
    spelled: dict[str, str]


@dataclass(frozen=True)
class TailPatterns:
    """The parser's tail pattern: the rest of a reasoning body once every duplicate-heading finding is
    located (hundreds of repeated headings) is read by one ``split`` in C instead of a Python step
    per heading. ``split`` is ``headings`` with two groups: the opening tag before the heading (None
    for a newline) and the heading line (blanks, decoration, name as written, colon)."""

    split: re.Pattern[str]
    strip: str  # characters around the name in a heading line (its ends are letters or digits)


@dataclass(frozen=True)
class Schema:
    """Tag names, section names and matching options of one completion format.

    Attributes:
      reasoning_tag: name of the reasoning block tag (``<reasoning>...</reasoning>``).
      answer_tag: name of the answer block tag (``<answer>...</answer>``).
      sections: canonical section names, in their required order (at least one). A name is
        words of letters/digits joined by single ``_``, ``-`` or space characters.
      case_sensitive_tags: when False (default) ``<Reasoning>`` and ``<REASONING>`` are tags too.
      case_sensitive_headings: when False (default) ``plan:`` and ``PLAN:`` are the ``Plan`` heading.
      flexible_separators: when True (default) ``_``, ``-`` and a space are interchangeable inside a
        heading name, so ``Sanity check:`` and ``Sanity-check:`` are the ``Sanity_check`` heading.
      markdown_headings: when True (default) a heading may carry markdown decoration: a ``#``..``######``
        or ``-``/``*``/``+`` list marker (followed by a space) and up to three ``*``/``_`` emphasis
        characters around the name and the colon (``## Plan:``, ``**Plan:**``, ``**Plan**:``).
      max_findings_per_code: at most this many located findings are kept per issue code in
        ``Completion.findings`` (the issue code itself is always reported); bounds the work on hostile
        text such as 20,000 repeated tags.
      max_blocks: at most this many blocks of each kind are kept in ``Completion.reasoning_blocks`` /
        ``answer_blocks`` (the first ones); the true numbers are ``n_reasoning_blocks`` /
        ``n_answer_blocks``. Issues are computed from all blocks.
      max_sections: at most this many sections are kept in ``Completion.sections`` (the first ones);
        the true number is ``n_sections``. Issues are computed from all headings.
    """

    reasoning_tag: str = "reasoning"
    answer_tag: str = "answer"
    sections: tuple[str, ...] = ("Plan", "Reasoning", "Evidence", "Sanity_check")
    case_sensitive_tags: bool = False
    case_sensitive_headings: bool = False
    flexible_separators: bool = True
    markdown_headings: bool = True
    max_findings_per_code: int = 32
    max_blocks: int = 64
    max_sections: int = 64

    def __post_init__(self) -> None:
        for name in ("reasoning_tag", "answer_tag"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _TAG_NAME.fullmatch(value):
                raise ValueError(f"Schema.{name} must be a tag name matching [A-Za-z][A-Za-z0-9_.-]*, got {value!r}")
        if self._tag_key(self.reasoning_tag) == self._tag_key(self.answer_tag):
            raise ValueError(f"Schema.reasoning_tag and Schema.answer_tag must differ, both are {self.answer_tag!r}")
        sections = self.sections
        if isinstance(sections, str) or not isinstance(sections, Sequence):
            raise ValueError(f"Schema.sections must be a sequence of section names, got {type(sections).__name__}")
        sections = tuple(sections)
        object.__setattr__(self, "sections", sections)
        if not sections:
            raise ValueError("Schema.sections must name at least one section")
        seen: dict[str, str] = {}
        for i, name in enumerate(sections):
            if not isinstance(name, str) or not _SECTION_NAME.fullmatch(name):
                raise ValueError(
                    f"Schema.sections[{i}] must be words of letters/digits joined by single '_', '-' "
                    f"or ' ', got {name!r}"
                )
            key = self.heading_key(name)
            if key in seen:
                raise ValueError(
                    f"Schema.sections[{i}] {name!r} is the same heading as {seen[key]!r} "
                    "under this schema's matching options"
                )
            seen[key] = name
        for name in ("case_sensitive_tags", "case_sensitive_headings", "flexible_separators", "markdown_headings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Schema.{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("max_findings_per_code", "max_blocks", "max_sections"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Schema.{name} must be an int >= 1, got {value!r}")

    def _tag_key(self, tag: str) -> str:
        return tag if self.case_sensitive_tags else tag.lower()

    def heading_key(self, text: str) -> str:
        """Normalise heading text the way this schema compares headings (case, separators)."""
        if self.flexible_separators:
            text = _SEPARATORS.sub("_", text)
        return text if self.case_sensitive_headings else text.lower()

    def _heading_parts(self, sections: Sequence[str]) -> tuple[str, str, str, str, str]:
        """``(opening_tags, lookahead, line, plain_line, names_only)`` regex sources for headings of
        ``sections``. A heading follows a newline or an opening tag (``opening_tags``), then a cheap
        lookahead on the line's first character; ``line`` has the groups line/head/name, ``plain_line``
        no group, ``names_only`` one group, the name as written."""
        tag_case = "" if self.case_sensitive_tags else "i"
        tag_flags = f"(?{tag_case}:" if tag_case else "(?-i:"
        r, a = re.escape(self.reasoning_tag), re.escape(self.answer_tag)
        sep = "[ _-]" if self.flexible_separators else None
        alternatives = "|".join(
            sep.join(re.escape(w) for w in _SEPARATORS.split(name)) if sep else re.escape(name)
            for name in sorted(sections, key=len, reverse=True)
        )
        if self.markdown_headings:
            decoration = r"(?:(?:\#{1,6}+|[-*+])[ \t]++)?+[*_]{0,3}+"
            tail = r"[*_]{0,3}+[ \t]*+:[*_]{0,3}+"
        else:
            decoration = ""
            tail = r"[ \t]*+:"
        head_case = "(?-i:" if self.case_sensitive_headings else "(?i:"
        line = rf"(?P<line>[ \t]*+(?P<head>{decoration}{head_case}(?P<name>{alternatives})){tail}))"
        plain = rf"[ \t]*+{decoration}{head_case}(?:{alternatives})){tail}"
        names_only = rf"[ \t]*+{decoration}{head_case}({alternatives})){tail}"
        # The lookahead's characters: any section's first letter (both cases) or a decoration.
        starts = "".join(sorted({w[0] for w in self.sections}))
        if not self.case_sensitive_headings:
            starts = "".join(sorted(set(starts.lower() + starts.upper())))
        if self.markdown_headings:
            starts += r"#*+_\-"
        return rf"<{tag_flags}{r}>|{a}>)", rf"(?=[ \t]*+[{starts}])", line, plain, names_only

    @cached_property
    def tail_patterns(self) -> TailPatterns:
        """The parser's tail pattern (:class:`TailPatterns`); for :mod:`dsa_cast.parse`."""
        # Only compiled when a completion has hundreds of headings (cached on the instance).
        tags, look, _, plain, _ = self._heading_parts(self.sections)
        split = re.compile(rf"(?:\n|({tags})){look}({plain})", re.ASCII)
        return TailPatterns(split=split, strip=" \t#-*+_:")

    @cached_property
    def patterns(self) -> Patterns:
        """The compiled tag and heading patterns (:class:`Patterns`); for :mod:`dsa_cast.parse`."""
        # Cached on the (frozen) instance: compiled once per schema, no module-level state.
        tag_case = "" if self.case_sensitive_tags else "i"
        tag_flags = f"(?{tag_case}:" if tag_case else "(?-i:"
        r, a = re.escape(self.reasoning_tag), re.escape(self.answer_tag)
        # One alternation of four literal tags. Which group matched (``lastindex``) says the tag:
        # 1 = <reasoning>, 2 = <answer>, 3 = </reasoning>, 4 = </answer>. The engine checks a bounded
        # literal at each '<', so the scan is linear.
        tags = re.compile(rf"<{tag_flags}({r})>|({a})>|/({r})>|/({a})>)", re.ASCII)

        # Headings (see _heading_parts). A heading starts a line or directly follows an opening tag
        # (``<reasoning>Plan:``). The scan pattern consumes that newline or tag, so the engine skips
        # ahead to candidate characters; the start of the text is tried once with ``heading_at``.
        # Every quantifier is possessive or bounded, so an attempt costs at most the length of its
        # line's leading blanks and decoration: the whole scan is linear. ASCII: no Unicode case
        # folding such as 'ſ' == 's'. The prefix's lookahead rejects most non-heading lines (blank,
        # prose) before the costlier groups.
        opening, look, line, _, names_only = self._heading_parts(self.sections)
        prefix = rf"(?:\n|{opening}){look}"
        headings = re.compile(prefix + line, re.ASCII)
        heading_at = re.compile(line, re.ASCII)
        heading_names = re.compile(prefix + names_only, re.ASCII)
        keys = {self.heading_key(n): n for n in self.sections}
        return Patterns(
            tags=tags,
            headings=headings,
            heading_at=heading_at,
            heading_names=heading_names,
            heading_keys=keys,
            spelled={n: n for n in self.sections},
        )


DSA = Schema()
"""The default DSA format: ``<reasoning>`` with Plan / Reasoning / Evidence / Sanity_check, then ``<answer>``."""

THINK = Schema(reasoning_tag="think")
"""``<think>...</think><answer>...</answer>`` with the same four sections."""
