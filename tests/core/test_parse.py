"""Tests for dsa_cast.schema and dsa_cast.parse: examples per issue code, and hypothesis properties
(round-trip, determinism, span consistency, permutation/removal, never-raises on any text)."""

from __future__ import annotations

import dataclasses
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dsa_cast.parse import Block, Code, Completion, Finding, Section, parse
from dsa_cast.schema import DSA, THINK, Schema

C = Code
ALL_MISSING = (C.MISSING_REASONING, C.MISSING_ANSWER, C.MISSING_SECTION)


def dsa(
    plan: str = "Add the two numbers.",
    reasoning: str = "2 + 3 = 5.",
    evidence: str = "CALC: 2 + 3 = 5",
    sanity: str = "5 is more than either addend.",
    answer: str = "5",
) -> str:
    return (
        f"<reasoning>\nPlan:\n{plan}\nReasoning:\n{reasoning}\nEvidence:\n{evidence}\n"
        f"Sanity_check:\n{sanity}\n</reasoning>\n<answer>\n{answer}\n</answer>"
    )


GOOD = dsa()


# ----------------------------------------------------------------------------- examples


def test_clean_completion() -> None:
    c = parse(GOOD)
    assert c.issues == ()
    assert c.findings == ()
    assert c.exact_format
    assert [s.name for s in c.sections] == ["Plan", "Reasoning", "Evidence", "Sanity_check"]
    assert [s.body for s in c.sections] == [
        "Add the two numbers.",
        "2 + 3 = 5.",
        "CALC: 2 + 3 = 5",
        "5 is more than either addend.",
    ]
    assert c.answer is not None and c.answer.body == "\n5\n" and c.answer.closed
    assert c.reasoning is not None and c.reasoning.start == 0
    assert c.section("Evidence") is c.sections[2]
    assert c.section("sanity check") is c.sections[3]  # any accepted spelling
    assert (c.n_reasoning_blocks, c.n_answer_blocks, c.n_sections) == (1, 1, 4)


def test_seed_example_glued_heading_and_surrounding_whitespace() -> None:
    # The seed notebook's own examples put "Plan:" right after the opening tag.
    text = (
        "\n  <reasoning>Plan:\n- Add the two numbers.\nReasoning:\n- 2 + 3 = 5.\nEvidence:\n"
        "- Direct addition.\nSanity_check:\n- 5 is reasonable.\n</reasoning><answer>5</answer>\n\n"
    )
    c = parse(text)
    assert c.issues == () and c.exact_format
    assert c.sections[0].heading_start == text.index("Plan:")


@pytest.mark.parametrize(
    ("text", "issues"),
    [
        ("", ALL_MISSING),
        ("   \n\t ", ALL_MISSING),
        ("The answer is 5.", (C.MISSING_REASONING, C.MISSING_ANSWER, C.TEXT_BEFORE, C.MISSING_SECTION)),
        ("<answer>5</answer>", (C.MISSING_REASONING, C.MISSING_SECTION)),
        (GOOD.replace("</answer>", ""), (C.UNCLOSED_ANSWER, C.TRUNCATED)),
        (GOOD.replace("</reasoning>", ""), (C.UNCLOSED_REASONING, C.MISSING_ANSWER, C.NESTED_TAG, C.TRUNCATED)),
        (GOOD.split("Evidence:")[0], (C.UNCLOSED_REASONING, C.MISSING_ANSWER, C.TRUNCATED, C.MISSING_SECTION)),
        (GOOD + "<answer>6</answer>", (C.DUPLICATE_ANSWER,)),
        (GOOD + "\n" + GOOD, (C.DUPLICATE_REASONING, C.DUPLICATE_ANSWER, C.HEADING_OUTSIDE_REASONING)),
        (dsa(answer="  "), (C.EMPTY_ANSWER,)),
        ("<answer>5</answer>" + GOOD.split("<answer>")[0], (C.ANSWER_BEFORE_REASONING,)),
        (GOOD + "</answer>", (C.STRAY_CLOSING_TAG, C.TEXT_AFTER)),
        ("Sure! " + GOOD, (C.TEXT_BEFORE,)),
        (GOOD + " Hope this helps.", (C.TEXT_AFTER,)),
        (GOOD.replace("</reasoning>\n", "</reasoning>\nso\n"), (C.TEXT_BETWEEN,)),
        (dsa(evidence="I put <answer>5</answer> here"), (C.NESTED_TAG,)),
        (dsa(answer="5\nPlan: done"), (C.HEADING_OUTSIDE_REASONING,)),
        (GOOD + "\nSanity_check: ok", (C.TEXT_AFTER, C.HEADING_OUTSIDE_REASONING)),
        (GOOD.replace("<reasoning>\n", "<reasoning>\nLet me think.\n"), (C.TEXT_BEFORE_SECTIONS,)),
        (GOOD.replace("Evidence:\nCALC: 2 + 3 = 5\n", ""), (C.MISSING_SECTION,)),
        (GOOD.replace("Sanity_check:", "Plan:"), (C.MISSING_SECTION, C.DUPLICATE_SECTION, C.SECTION_OUT_OF_ORDER)),
        (dsa(evidence="x\nPlan:\nagain"), (C.DUPLICATE_SECTION, C.SECTION_OUT_OF_ORDER)),
        (dsa(plan="a\nPlan:\nb"), (C.DUPLICATE_SECTION,)),
        (
            GOOD.replace("Plan:", "P1:").replace("Evidence:", "Plan:").replace("P1:", "Evidence:"),
            (C.SECTION_OUT_OF_ORDER,),
        ),
        (dsa(reasoning=" \n "), (C.EMPTY_SECTION,)),
        # A heading in the middle of a line is prose, not a heading.
        (dsa(plan="we Plan: nothing").replace("Plan:\nwe", "Plan x:\nwe"), (C.TEXT_BEFORE_SECTIONS, C.MISSING_SECTION)),
        # Lookalike tags are plain text.
        (
            "< reasoning >Plan: a</ reasoning><answer>1</answer>",
            (C.MISSING_REASONING, C.TEXT_BEFORE, C.MISSING_SECTION),
        ),
        (
            '<reasoning type="x">Plan: a</reasoning><answer>1</answer>',
            (C.MISSING_REASONING, C.STRAY_CLOSING_TAG, C.TEXT_BEFORE, C.MISSING_SECTION),
        ),
        # Pre-filled "<reasoning>" left out of the graded text.
        (
            GOOD.removeprefix("<reasoning>"),
            (C.MISSING_REASONING, C.STRAY_CLOSING_TAG, C.TEXT_BEFORE, C.HEADING_OUTSIDE_REASONING, C.MISSING_SECTION),
        ),
    ],
)
def test_issue_examples(text: str, issues: tuple[Code, ...]) -> None:
    c = parse(text)
    assert c.issues == issues
    assert c.exact_format is False


def test_issue_values_are_plain_strings() -> None:
    c = parse("")
    assert c.issues == ("missing_reasoning", "missing_answer", "missing_section")
    assert all(isinstance(i, str) for i in c.issues)
    assert len({code.value for code in Code}) == len(Code)


def test_findings_locate_each_issue() -> None:
    text = GOOD.replace("Evidence:\nCALC: 2 + 3 = 5\n", "") + " tail"
    c = parse(text)
    assert c.issues == (C.TEXT_AFTER, C.MISSING_SECTION)
    after, missing = c.findings
    assert after == Finding(C.TEXT_AFTER, text.index("tail"), len(text))
    assert missing.section == "Evidence" and missing.start == c.reasoning.body_end


def test_missing_sections_listed_in_schema_order() -> None:
    assert [f.section for f in parse("").findings if f.code is C.MISSING_SECTION] == list(DSA.sections)


def test_out_of_order_and_duplicate_findings_name_sections() -> None:
    c = parse(GOOD.replace("Sanity_check:", "Reasoning:"))
    assert c.issues == (C.MISSING_SECTION, C.DUPLICATE_SECTION, C.SECTION_OUT_OF_ORDER)
    by_code = {f.code: f.section for f in c.findings}
    assert by_code == {
        C.DUPLICATE_SECTION: "Reasoning",
        C.SECTION_OUT_OF_ORDER: "Reasoning",
        C.MISSING_SECTION: "Sanity_check",
    }


def test_truncated_mid_answer() -> None:
    text = GOOD[: GOOD.index("</answer>") + 4]  # ends inside "</answer>"
    c = parse(text)
    assert c.issues == (C.UNCLOSED_ANSWER, C.TRUNCATED)
    assert c.answer == Block(
        text.index("<answer>"),
        len(text),
        text.index("<answer>") + 8,
        len(text),
        text[text.index("<answer>") + 8 :],
        False,
    )


def test_stray_reasoning_close_tag_inside_answer_is_nested() -> None:
    c = parse(dsa(answer="5</reasoning>"))
    assert c.issues == (C.NESTED_TAG,)
    assert c.answer is not None and c.answer.body == "\n5</reasoning>\n"


@pytest.mark.parametrize(
    "heading",
    [
        "Plan:",
        "plan:",
        "PLAN :",
        "**Plan:**",
        "**Plan**:",
        "*Plan*:",
        "__Plan__:",
        "## Plan:",
        "###### Plan:",
        "- Plan:",
        "* Plan:",
        "+ **Plan:**",
        "  \t Plan:",
    ],
)
def test_accepted_heading_spellings(heading: str) -> None:
    c = parse(GOOD.replace("Plan:", heading, 1))
    assert c.issues == ()
    assert c.sections[0].name == "Plan"
    assert c.sections[0].heading == heading.strip(" \t")


@pytest.mark.parametrize("heading", ["Sanity check:", "Sanity-check:", "sanity_CHECK:", "**Sanity check**:"])
def test_sanity_check_variants(heading: str) -> None:
    c = parse(GOOD.replace("Sanity_check:", heading))
    assert c.issues == () and c.sections[3].name == "Sanity_check"


@pytest.mark.parametrize(
    "heading",
    [
        "Plans:",
        "Plan -",
        "Plan",
        "#Plan:",
        "-Plan:",
        "1. Plan:",
        "> Plan:",
        "The Plan:",
        "Sanity  check:",
        "Sanitycheck:",
        "\u00a0Plan:",
        "Pl an:",
        "####### Plan:",
    ],
)
def test_rejected_heading_spellings(heading: str) -> None:
    c = parse(GOOD.replace("Plan:", heading, 1))
    assert C.MISSING_SECTION in c.issues
    assert c.section("Plan") is None


@pytest.mark.parametrize("tag", ["<Reasoning>", "<REASONING>", "<rEaSoNiNg>"])
def test_tag_names_case_insensitive_by_default(tag: str) -> None:
    c = parse(GOOD.replace("<reasoning>", tag).replace("</answer>", "</ANSWER>"))
    assert c.issues == ()


def test_case_sensitive_options() -> None:
    strict = Schema(case_sensitive_tags=True, case_sensitive_headings=True)
    assert parse(GOOD, strict).issues == ()
    assert C.MISSING_REASONING in parse(GOOD.replace("<reasoning>", "<Reasoning>"), strict).issues
    assert parse(GOOD.replace("Plan:", "plan:"), strict).issues == (C.TEXT_BEFORE_SECTIONS, C.MISSING_SECTION)


def test_exact_separators_and_plain_headings_options() -> None:
    exact = Schema(flexible_separators=False, markdown_headings=False)
    assert parse(GOOD, exact).issues == ()
    assert C.MISSING_SECTION in parse(GOOD.replace("Sanity_check:", "Sanity check:"), exact).issues
    assert C.MISSING_SECTION in parse(GOOD.replace("Plan:", "**Plan:**"), exact).issues


def test_answer_glued_to_numbers_and_no_unicode_case_folding() -> None:
    c = parse(GOOD.replace("<answer>\n5\n</answer>", "<answer>42</answer>"))
    assert c.issues == () and c.answer is not None and c.answer.body == "42"
    # U+017F (long s) folds to 's' under Unicode rules; tags and headings are ASCII-only.
    assert C.MISSING_REASONING in parse(GOOD.replace("<reasoning>", "<rea\u017foning>")).issues


def test_think_schema() -> None:
    text = GOOD.replace("reasoning>", "think>")
    assert parse(text, THINK).exact_format
    assert C.MISSING_REASONING in parse(text).issues
    assert C.MISSING_REASONING in parse(GOOD, THINK).issues


def test_custom_schema_one_section() -> None:
    schema = Schema(reasoning_tag="scratchpad", answer_tag="final", sections=["Work"])
    assert schema.sections == ("Work",)
    c = parse("<scratchpad>Work: 6*7</scratchpad><final>42</final>", schema)
    assert c.exact_format and c.sections[0].body == "6*7"


def test_sections_only_from_first_reasoning_block() -> None:
    text = "<reasoning>Plan: a</reasoning><reasoning>Reasoning: b</reasoning><answer>1</answer>"
    c = parse(text)
    assert [s.name for s in c.sections] == ["Plan"]
    assert c.issues == (C.DUPLICATE_REASONING, C.HEADING_OUTSIDE_REASONING, C.MISSING_SECTION)


def test_section_lookup_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="Evidnce"):
        parse(GOOD).section("Evidnce")
    assert parse("").section("Plan") is None


@pytest.mark.parametrize("bad", [None, b"<answer>1</answer>", 42, ["text"], bytearray(b"x")])
def test_non_str_text_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=rf"'text'.*{type(bad).__name__}"):
        parse(bad)  # type: ignore[arg-type]


def test_non_schema_raises_type_error() -> None:
    with pytest.raises(TypeError, match=r"'schema'.*dict"):
        parse("x", {"reasoning_tag": "think"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"reasoning_tag": ""}, "reasoning_tag"),
        ({"reasoning_tag": "rea soning"}, "reasoning_tag"),
        ({"answer_tag": "<answer>"}, "answer_tag"),
        ({"answer_tag": "REASONING"}, "answer_tag"),
        ({"sections": ()}, "sections"),
        ({"sections": "Plan"}, "sections"),
        ({"sections": ("Plan", "Sanity check", "sanity_check")}, r"sections\[2\]"),
        ({"sections": ("Plan:",)}, r"sections\[0\]"),
        ({"sections": ("Plan", 3)}, r"sections\[1\]"),
        ({"case_sensitive_tags": 1}, "case_sensitive_tags"),
        ({"max_blocks": 0}, "max_blocks"),
        ({"max_findings_per_code": True}, "max_findings_per_code"),
    ],
)
def test_schema_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"Schema\.{field}"):
        Schema(**kwargs)


def test_case_sensitive_tags_may_differ_only_by_case() -> None:
    Schema(reasoning_tag="A", answer_tag="a", case_sensitive_tags=True)
    with pytest.raises(ValueError):
        Schema(reasoning_tag="A", answer_tag="a")


@pytest.mark.parametrize(
    "schema",
    [
        DSA,
        THINK,
        Schema(markdown_headings=False),
        Schema(case_sensitive_tags=True, case_sensitive_headings=True, flexible_separators=False, sections=("A b",)),
    ],
)
def test_heading_patterns_group_numbers(schema: Schema) -> None:
    # parse() reads groups by number; keep the schema's patterns in step with it.
    for pattern in (schema.patterns.headings, schema.patterns.heading_at):
        assert pattern.groupindex == {"line": 1, "head": 2, "name": 3}


def test_schema_is_hashable_and_comparable() -> None:
    assert Schema() == DSA and hash(Schema()) == hash(DSA)
    assert {DSA: 1, THINK: 2}[Schema(reasoning_tag="think")] == 2


def test_caps_keep_true_counts() -> None:
    schema = Schema(max_blocks=2, max_sections=3, max_findings_per_code=1)
    text = "<reasoning>" + "Plan: x\n" * 5 + "</reasoning>" + "<answer>1</answer>" * 4
    c = parse(text, schema)
    assert (len(c.reasoning_blocks), len(c.answer_blocks), len(c.sections)) == (1, 2, 3)
    assert (c.n_reasoning_blocks, c.n_answer_blocks, c.n_sections) == (1, 4, 5)
    assert [f.code for f in c.findings].count(C.DUPLICATE_SECTION) == 1
    assert c.issues == (C.DUPLICATE_ANSWER, C.MISSING_SECTION, C.DUPLICATE_SECTION)


ADVERSARIAL = {
    "open_tags": "<reasoning>" * 20_000,
    "closed_pairs": "<reasoning>x</reasoning>" * 8_400,
    "digits": "<reasoning>Plan: a</reasoning><answer>" + "9" * 200_000 + "</answer>",
    "boxed": "<answer>" + "\\boxed{" * 28_600 + "</answer>",
    "headings_inside": "<reasoning>" + "Plan:\n" * 10_000 + "</reasoning><answer>1</answer>",
    "md_headings_inside": "<reasoning>" + "## **Sanity check**:\n" * 10_000 + "</reasoning>",
    "headings_outside": "Sanity_check: x\n" * 12_500,
    "newlines": "\n" * 200_000,
    "less_than": "<" * 200_000,
    "near_tags": "<reasonin" * 22_000,
    "near_headings": "\nSanity chec:" * 15_000,
    "mixed_tags": "<answer><reasoning></answer></reasoning>" * 5_000,
    "indented": (" " * 99 + "\n") * 2_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_return(name: str) -> None:
    text = ADVERSARIAL[name]
    c = parse(text)
    assert isinstance(c, Completion) and c.issues and not c.exact_format
    assert len(c.reasoning_blocks) <= DSA.max_blocks and len(c.sections) <= DSA.max_sections
    assert len(c.findings) <= DSA.max_findings_per_code * len(Code)


def test_adversarial_counts() -> None:
    assert parse(ADVERSARIAL["closed_pairs"]).n_reasoning_blocks == 8_400
    assert parse(ADVERSARIAL["headings_inside"]).n_sections == 10_000
    c = parse(ADVERSARIAL["open_tags"])
    assert c.n_reasoning_blocks == 1 and c.issues == (
        C.UNCLOSED_REASONING,
        C.MISSING_ANSWER,
        C.NESTED_TAG,
        C.TRUNCATED,
        C.TEXT_BEFORE_SECTIONS,
        C.MISSING_SECTION,
    )


def test_import_is_light() -> None:
    code = (
        "import sys, dsa_cast.parse, dsa_cast.schema; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'numpy', 'jax', 'jaxlib', 'flax', 'tunix', 'sympy'}); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- properties

# Body text that holds no tag ('<') and no heading (':'), and is not blank.
BODY_ALPHABET = st.characters(blacklist_characters="<:", blacklist_categories=("Cs",), max_codepoint=0x2FFF)
bodies = st.text(BODY_ALPHABET, min_size=1, max_size=40).map(str.strip).filter(bool)
blank = st.text(" \t\n", max_size=3)


def _spell(name: str, style: int, case: int) -> str:
    """One accepted spelling of a heading."""
    spelled = [name, name.lower(), name.upper()][case]
    return ["{}:", "**{}:**", "**{}**:", "## {}:", "- {}:", "{} :", "__{}__:"][style].format(spelled)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    if draw(st.booleans()):
        return draw(st.sampled_from([DSA, THINK]))
    word = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)
    names = draw(
        st.lists(
            st.builds(lambda a, b: a if not b else f"{a}_{b}", word, word | st.just("")),
            min_size=1,
            max_size=6,
            unique_by=lambda s: s.lower(),
        )
    )
    tags = draw(st.lists(word, min_size=2, max_size=2, unique_by=str.lower))
    return Schema(reasoning_tag=tags[0], answer_tag=tags[1], sections=tuple(names))


@st.composite
def structured(draw: st.DrawFn) -> tuple[Schema, list[int], list[str], str]:
    """(schema, section order, one body per section, answer) of a clean completion."""
    schema = draw(schemas())
    n = len(schema.sections)
    body_list = draw(st.lists(bodies, min_size=n, max_size=n))
    return schema, list(range(n)), body_list, draw(bodies)


def render(schema: Schema, order: list[int], body_list: list[str], answer: str, data: st.DataObject) -> str:
    """Render sections ``order`` (schema indices) with ``body_list`` in position order, drawing the
    spelling of every tag and heading and the blanks between them from ``data``."""

    def tag(name: str, close: bool = False) -> str:
        t = data.draw(st.sampled_from([name, name.lower(), name.upper()]))
        return f"<{'/' if close else ''}{t}>"

    parts = [data.draw(blank), tag(schema.reasoning_tag), data.draw(blank)]
    for k, i in enumerate(order):
        if k:
            parts.append("\n" + data.draw(blank))
        name = schema.sections[i]
        if schema.flexible_separators:
            name = name.replace("_", data.draw(st.sampled_from("_- ")))
        parts.append(_spell(name, data.draw(st.integers(0, 6)), data.draw(st.integers(0, 2))))
        parts.append(data.draw(st.sampled_from([" ", "\n", "\t", " \n"])) + body_list[k])
    parts += [
        data.draw(blank),
        tag(schema.reasoning_tag, True),
        data.draw(blank),
        tag(schema.answer_tag),
        answer,
        tag(schema.answer_tag, True),
        data.draw(blank),
    ]
    return "".join(parts)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(structured(), st.data())
def test_round_trip(case, data: st.DataObject) -> None:
    schema, order, body_list, answer = case
    text = render(schema, order, body_list, answer, data)
    c = parse(text, schema)
    assert c.issues == ()
    assert c.exact_format
    assert [s.name for s in c.sections] == list(schema.sections)
    assert [s.body for s in c.sections] == body_list
    assert c.answer is not None and c.answer.body == answer
    assert c.reasoning is not None and c.reasoning.end <= c.answer.start


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(structured(), st.data())
def test_permuted_sections_are_out_of_order(case, data: st.DataObject) -> None:
    schema, order, body_list, answer = case
    assume(len(order) >= 2)
    perm = data.draw(st.permutations(order))
    assume(perm != order)
    text = render(schema, perm, body_list, answer, data)
    c = parse(text, schema)
    assert c.issues == (C.SECTION_OUT_OF_ORDER,)
    assert [s.name for s in c.sections] == [schema.sections[i] for i in perm]
    assert [s.body for s in c.sections] == body_list
    assert not c.exact_format


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(structured(), st.data())
def test_removed_section_is_missing(case, data: st.DataObject) -> None:
    schema, order, body_list, answer = case
    assume(len(order) >= 2)
    drop = data.draw(st.sampled_from(order))
    kept = [i for i in order if i != drop]
    text = render(schema, kept, body_list[: len(kept)], answer, data)
    c = parse(text, schema)
    assert c.issues == (C.MISSING_SECTION,)
    assert [f.section for f in c.findings] == [schema.sections[drop]]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(structured(), st.data())
def test_repeated_or_emptied_section(case, data: st.DataObject) -> None:
    schema, order, body_list, answer = case
    k = data.draw(st.sampled_from(order))
    emptied = body_list.copy()
    emptied[k] = ""
    assert parse(render(schema, order, emptied, answer, data), schema).issues == (C.EMPTY_SECTION,)
    repeated = order[: k + 1] + [k] + order[k + 1 :]
    text = render(schema, repeated, body_list[: k + 1] + ["again"] + body_list[k + 1 :], answer, data)
    assert parse(text, schema).issues == (C.DUPLICATE_SECTION,)


# Soups of tags, lookalikes, headings and filler: the inputs most likely to trip the parser.
SOUP_TOKENS = [
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "<REASONING>",
    "</Answer>",
    "<think>",
    "</think>",
    "< reasoning >",
    "<reasoning",
    "</",
    "<",
    ">",
    "Plan:",
    "Reasoning:",
    "Evidence:",
    "Sanity_check:",
    "sanity check:",
    "**Plan:**",
    "## Evidence:",
    "- Reasoning :",
    "Plan",
    ":",
    "\n",
    "\r\n",
    " ",
    "\t",
    "x",
    "42",
    "\\boxed{",
    "CALC: 1+1 = 2",
    "#",
    "*",
    "_",
    "\u00a0",
    "\u017f",
]
soups = st.lists(st.sampled_from(SOUP_TOKENS) | st.text(max_size=3), max_size=60).map("".join)


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def check_invariants(c: Completion, text: str, schema: Schema) -> None:
    """Structural facts that must hold for every parse."""
    n = len(text)

    def fold(s: str) -> str:  # the parser's tag comparison: ASCII-only case folding, if any
        return s if schema.case_sensitive_tags else s.translate(ASCII_LOWER)

    assert c.text is text and c.schema is schema
    blocks = sorted(c.reasoning_blocks + c.answer_blocks, key=lambda b: b.start)
    for b in blocks:
        assert 0 <= b.start < b.body_start <= b.body_end <= b.end <= n
        assert text[b.body_start : b.body_end] == b.body
        if not b.closed:
            assert b.end == b.body_end == n
    for b1, b2 in itertools.pairwise(blocks):
        assert b1.end <= b2.start
    for tags, kind in ((c.reasoning_blocks, schema.reasoning_tag), (c.answer_blocks, schema.answer_tag)):
        for b in tags:
            assert fold(text[b.start : b.body_start]) == fold(f"<{kind}>")
            if b.closed:
                assert fold(text[b.body_end : b.end]) == fold(f"</{kind}>")
            assert fold(f"</{kind}>") not in fold(b.body)  # the first closing tag closes
    assert len(c.reasoning_blocks) == min(c.n_reasoning_blocks, schema.max_blocks)
    assert len(c.answer_blocks) == min(c.n_answer_blocks, schema.max_blocks)
    assert len(c.sections) == min(c.n_sections, schema.max_sections)
    if c.sections:
        r = c.reasoning
        assert r is not None
        for s in c.sections:
            assert s.name in schema.sections
            assert r.body_start <= s.heading_start < s.body_start <= s.body_end <= r.body_end
            assert text[s.body_start : s.body_end].strip() == s.body
            assert text[s.heading_start : s.body_start] == s.heading
            assert s.heading.rstrip("*_").endswith(":")
        for s1, s2 in itertools.pairwise(c.sections):
            assert s1.body_end <= s2.heading_start
    order = {code: i for i, code in enumerate(Code)}
    assert all(isinstance(i, Code) for i in c.issues)
    assert [order[i] for i in c.issues] == sorted({order[i] for i in c.issues})
    assert {f.code for f in c.findings} == set(c.issues)
    assert [order[f.code] for f in c.findings] == sorted(order[f.code] for f in c.findings)
    for f in c.findings:
        assert 0 <= f.start <= f.end <= n
    assert c.exact_format == (not c.issues)
    assert (C.MISSING_REASONING in c.issues) == (c.n_reasoning_blocks == 0)
    assert (C.MISSING_ANSWER in c.issues) == (c.n_answer_blocks == 0)
    assert (C.TRUNCATED in c.issues) == any(not b.closed for b in blocks)
    assert (C.EMPTY_SECTION in c.issues) == any(not s.body for s in c.sections)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.text(), st.sampled_from([DSA, THINK, Schema(case_sensitive_tags=True, markdown_headings=False)]))
def test_never_raises_on_any_text(text: str, schema: Schema) -> None:
    check_invariants(parse(text, schema), text, schema)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(soups, st.sampled_from([DSA, THINK]))
def test_never_raises_on_tag_and_heading_soup(text: str, schema: Schema) -> None:
    c = parse(text, schema)
    check_invariants(c, text, schema)
    assert parse(text, schema) == c  # deterministic


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(soups, soups)
def test_appending_text_after_a_clean_completion_is_never_clean(prefix: str, suffix: str) -> None:
    assume(suffix.strip())
    c = parse(GOOD + suffix)
    assert c.issues and not c.exact_format
    assume(prefix.strip())
    assert not parse(prefix + GOOD).exact_format


def test_dataclasses_are_frozen() -> None:
    c = parse(GOOD)
    for obj, attr in (
        (c, "issues"),
        (c.answer, "body"),
        (c.sections[0], "body"),
        (Finding(C.TRUNCATED, 0, 0), "code"),
        (DSA, "answer_tag"),
    ):
        with pytest.raises(AttributeError):
            setattr(obj, attr, None)
    assert isinstance(c.sections[0], Section)


# ----------------------------------------------------------------------------- docs

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
DOC_EXAMPLE = re.compile(r"```dsa\n(.*?)```\nIssues: ([^\n]*)", re.DOTALL)


def test_format_doc_examples() -> None:
    """Every ```dsa example in docs/format.md parses to the issues its 'Issues:' line states."""
    doc = FORMAT_DOC.read_text(encoding="utf-8")
    examples = DOC_EXAMPLE.findall(doc)
    assert len(examples) >= 10 and doc.count("```dsa\n") == len(examples)
    for text, stated in examples:
        expected = [] if stated == "none" else re.findall(r"`([a-z_]+)`", stated)
        assert list(parse(text).issues) == expected, text


def test_format_doc_lists_every_code_and_schema_field() -> None:
    doc = FORMAT_DOC.read_text(encoding="utf-8")
    table = re.findall(r"^\| `([a-z_]+)` \| when|^\| `([a-z_]+)` \|", doc, re.MULTILINE)
    listed = [b for _, b in table]
    codes = [c.value for c in Code]
    assert [c for c in listed if c in codes] == codes  # every code, in Code order
    fields = [f.name for f in dataclasses.fields(Schema)]
    assert [f for f in listed if f in fields] == fields
    for name in fields:
        assert f"`{getattr(DSA, name)!r}`".replace("'", '"') in doc or name == "sections"


# ----------------------------------------------------------------------------- heading-dense bodies
# Once every duplicate heading is located, the parser reads the rest of a reasoning body in C
# (parse._heading_tail). A schema whose caps are never reached always takes the heading loop, so
# its findings, cut to the small schema's caps, are what the tail must report.

_PIECES = [
    "Plan:",
    "Plan:",
    "plan :",
    "## **Reasoning:**",
    "Reasoning:",
    "- Evidence:",
    "Sanity-check:",
    "Sanity_check:",
    "Plan:\n",
    "Plan:\n",
    "\n",
    "\n",
    "\n",
    " ",
    "\t",
    "\u00a0",
    "x",
    "7",
    "<reasoning>",
    "<answer>",
    "</reasoning>",
    "**",
]


def _capped(c: Completion, cap: int) -> tuple:
    kept: dict[str, int] = {}
    findings = []
    for f in c.findings:
        kept[f.code] = kept.get(f.code, 0) + 1
        if kept[f.code] <= cap:
            findings.append(f)
    return c.issues, tuple(findings), c.n_sections


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_PIECES), min_size=8, max_size=150), st.booleans())
def test_heading_tail_reports_what_the_heading_loop_reports(pieces, wrap):
    small = Schema(max_findings_per_code=2, max_sections=3)
    big = Schema(max_findings_per_code=10**6, max_sections=10**6)
    body = "\n".join(pieces) if wrap else "".join(pieces)
    text = f"<reasoning>\n{body}</reasoning><answer>1</answer>" if wrap else body
    got, want = parse(text, small), parse(text, big)
    assert _capped(got, 2) == _capped(want, 2)
    assert got.sections == want.sections[:3]


@pytest.mark.parametrize(
    "unit",
    ["Plan:\n", "Plan:\nx\n", "plan:\nPLAN:\n", "Reasoning:\nPlan:\n", "Sanity_check:\n\u00a0\n", "Plan:<reasoning>"],
)
def test_heading_tail_on_thousands_of_headings(unit):
    text = "<reasoning>\nPlan:\nReasoning:\n" + unit * 3000 + "Evidence:\n</reasoning><answer>1</answer>"
    big = Schema(max_findings_per_code=10**6, max_sections=10**6)
    got, want = parse(text), parse(text, big)
    assert _capped(got, DSA.max_findings_per_code) == _capped(want, DSA.max_findings_per_code)
    assert got.sections == want.sections[: DSA.max_sections]


@pytest.mark.parametrize(
    "unit",
    [
        lambda i: f"Plan:\nx{i}\n",  # distinct bodies
        lambda i: "Plan" + " " * (i % 150) + ":\n",  # distinct heading lines, empty bodies
        lambda i: ["Plan", "pLaN", "Reasoning", "Evidence"][i % 4] + "\t" * (i % 90) + ":\n" + " " * (i % 3),
        lambda i: ("Reasoning:\n" if i % 500 else "Plan:\n") + ("\n" if i % 7 else "y\n"),
    ],
)
def test_heading_tail_on_thousands_of_distinct_headings(unit):
    text = "<reasoning>\nPlan:\nReasoning:\n" + "".join(unit(i) for i in range(3000)) + "</reasoning><answer>1</answer>"
    big = Schema(max_findings_per_code=10**6, max_sections=10**6)
    got, want = parse(text), parse(text, big)
    assert _capped(got, DSA.max_findings_per_code) == _capped(want, DSA.max_findings_per_code)
    assert got.sections == want.sections[: DSA.max_sections]
