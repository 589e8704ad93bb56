"""Benchmark inputs: a realistic labelled DSA corpus from GSM8K test, and the adversarial set.

The realistic corpus turns each GSM8K test solution into DSA completions of 1-2 KB (Plan,
Reasoning from the solution's steps, Evidence as ``CALC:`` lines from its ``<<a=b>>``
annotations, Sanity_check, then the answer block). The final value is written in many styles;
a share is wrong and a share is malformed, and every item carries the correctness a faithful
grader must report (``expected_correct``), decided by construction, not by any scorer.

The adversarial set is degenerate text of about 200 KB per case (repeated tags, huge numbers,
power towers, thousands of claims, one 100 KB expression...), for worst-case timing.

Run ``python benchmarks/corpus.py --write DIR`` to dump both as JSONL (handy for the CLI).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["CorpusConfig", "Item", "Case", "gsm8k_test_path", "build_corpus", "build_adversarial"]


def gsm8k_test_path() -> Path:
    """The GSM8K test split shipped in the package (``dsa_cast_train/assets/gsm8k/test.jsonl.gz``).

    Read by path with ``gzip`` (no ``dsa_cast_train`` import), so the core-only venv can use it."""
    return Path(__file__).resolve().parents[1] / "dsa_cast_train" / "assets" / "gsm8k" / "test.jsonl.gz"


@dataclass(frozen=True)
class CorpusConfig:
    """Shape of the realistic corpus.

    Attributes:
      per_question: completions generated from each GSM8K test item.
      share_wrong: fraction with a wrong final value (well formed otherwise).
      share_malformed: fraction with a format defect (see ``MALFORMED``).
      min_chars / max_chars: target length of a completion (filler sentences pad short ones).
      seed: RNG seed; the corpus is a pure function of the config and the data file.
      limit: use only the first ``limit`` GSM8K items (None: all 1,319).
    """

    per_question: int = 4
    share_wrong: float = 0.2
    share_malformed: float = 0.2
    min_chars: int = 1024
    max_chars: int = 2048
    seed: int = 20240601
    limit: int | None = None


@dataclass(frozen=True)
class Item:
    """One labelled completion. ``reference`` is the GSM8K ``answer`` field (solution + ``####``)."""

    id: str
    completion: str
    reference: str
    question: str
    expected_correct: bool
    kind: str  # "clean" | "wrong" | "malformed:<defect>"
    style: str  # how the final value is written


@dataclass(frozen=True)
class Case:
    """One adversarial input."""

    name: str
    completion: str
    reference: str


_ANNOTATION = re.compile(r"<<([^<>]*)=([^<>]*)>>")

# The final value written as text. Each maps a canonical value string to its written form.
STYLES: dict[str, str] = {
    "plain": "{v}",
    "thousands": "{c}",
    "dollar": "${c}",
    "decimal_zero": "{v}.0",
    "decimal_zeros": "{v}.00",
    "boxed": "\\boxed{{{v}}}",
    "bold": "**{v}**",
    "padded": "\n  {v}  \n",
    "gsm8k": "#### {v}",
}

# Format defects whose correctness is unambiguous.
MALFORMED: dict[str, bool] = {
    "no_answer_block": False,  # the value only in prose: no answer block to read
    "empty_answer": False,
    "two_values": False,  # "18 or 20": no single final value
    "truncated": False,  # cut off inside the reasoning, no answer block
    "sections_out_of_order": True,  # the answer block itself is right
    "missing_section": True,
    "text_after_answer": True,
    "no_reasoning_tags": True,
}

_FILLER = (
    "Each quantity used below is taken directly from the problem statement.",
    "I keep the units attached to every intermediate amount so nothing is mixed up.",
    "The intermediate results are carried forward exactly, without rounding.",
    "Before combining the amounts I check that each one answers a different part of the question.",
    "No quantity is counted twice, and every stated amount is used once.",
    "The order of the steps follows the order in which the problem introduces the quantities.",
)


def _with_commas(v: str) -> str:
    neg = v.startswith("-")
    digits = v.lstrip("-")
    if not digits.isdigit():
        return v
    return ("-" if neg else "") + f"{int(digits):,}"


def _write(value: str, style: str) -> str:
    return STYLES[style].format(v=value, c=_with_commas(value))


def _canonical(ref: str) -> str:
    return ref.split("####")[-1].strip().replace(",", "")


def _wrong_value(value: str, rng: random.Random) -> str:
    n = int(value)
    candidates = [n + 1, n - 1, n * 10, n + rng.randint(2, 9), round(n * 1.05) or n + 3, -n or 7]
    wrong = [c for c in candidates if c != n]
    return str(rng.choice(wrong))


def _steps(solution: str) -> tuple[list[str], list[str]]:
    """Reasoning sentences (annotations removed) and CALC lines (from the annotations)."""
    body = solution.split("####")[0]
    calcs = [f"CALC: {a.strip()} = {b.strip()}" for a, b in _ANNOTATION.findall(body)]
    lines = [" ".join(_ANNOTATION.sub("", ln).split()) for ln in body.splitlines() if ln.strip()]
    return lines, calcs


def _sections(
    question: str, solution: str, value: str, rng: random.Random, cfg: CorpusConfig, answer_text: str
) -> dict[str, str]:
    lines, calcs = _steps(solution)
    plan = (
        "Restate the problem: " + " ".join(question.split()) + "\n"
        "- List the given quantities.\n- Compute each intermediate amount in turn.\n"
        "- Combine them into the requested value and check it."
    )
    reasoning = "\n".join(f"Step {i}: {ln}" for i, ln in enumerate(lines, 1))
    evidence = "\n".join(calcs) if calcs else "No separate calculation is needed."
    sanity = (
        f"Redoing the last step gives {value} again, and the size of the result is plausible "
        "for the quantities in the problem."
    )
    parts = {"Plan": plan, "Reasoning": reasoning, "Evidence": evidence, "Sanity_check": sanity}
    target = rng.randint(cfg.min_chars, cfg.max_chars)
    size = len(_assemble(parts, list(parts), answer_text))
    fillers = list(_FILLER)
    rng.shuffle(fillers)
    i = 0
    while size < target:
        sentence = fillers[i % len(fillers)]
        parts["Reasoning"] += "\n" + sentence
        size += len(sentence) + 1
        i += 1
    return parts


def _assemble(parts: dict[str, str], order: list[str], answer: str | None) -> str:
    reasoning = "\n".join(f"{name}:\n{parts[name]}" for name in order)
    text = f"<reasoning>\n{reasoning}\n</reasoning>\n"
    if answer is not None:
        text += f"<answer>{answer}</answer>"
    return text


def _malformed(defect: str, parts: dict[str, str], answer: str, value: str, other: str) -> str:
    order = ["Plan", "Reasoning", "Evidence", "Sanity_check"]
    if defect == "no_answer_block":
        return _assemble(parts, order, None) + f"So the final answer is {value}."
    if defect == "empty_answer":
        return _assemble(parts, order, "\n")
    if defect == "two_values":
        return _assemble(parts, order, f"{value} or {other}")
    if defect == "truncated":
        full = _assemble(parts, order, answer)
        return full[: full.index("Sanity_check:") + len("Sanity_check:\nRedoing")]
    if defect == "sections_out_of_order":
        return _assemble(parts, ["Plan", "Evidence", "Reasoning", "Sanity_check"], answer)
    if defect == "missing_section":
        return _assemble(parts, ["Plan", "Reasoning", "Sanity_check"], answer)
    if defect == "text_after_answer":
        return _assemble(parts, order, answer) + "\nI hope this helps!"
    if defect == "no_reasoning_tags":
        body = "\n".join(f"{name}:\n{parts[name]}" for name in order)
        return f"{body}\n<answer>{answer}</answer>"
    raise ValueError(f"unknown defect {defect!r}")


def _read_gsm8k(path: Path, limit: int | None) -> Iterator[dict]:
    """Records of a GSM8K JSONL file (``.gz`` read through gzip), the first ``limit`` of them."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if limit is not None and i >= limit:
                return
            yield json.loads(line)


def build_corpus(cfg: CorpusConfig = CorpusConfig(), path: Path | None = None) -> list[Item]:
    """The labelled realistic corpus (deterministic for a given config and data file)."""
    rng = random.Random(cfg.seed)
    items: list[Item] = []
    styles = list(STYLES)
    defects = list(MALFORMED)
    for qi, row in enumerate(_read_gsm8k(path or gsm8k_test_path(), cfg.limit)):
        value = _canonical(row["answer"])
        for k in range(cfg.per_question):
            roll = rng.random()
            style = rng.choice(styles)
            if roll < cfg.share_wrong:
                kind, written_value, expected = "wrong", _wrong_value(value, rng), False
            else:
                kind, written_value, expected = "clean", value, True
            answer = _write(written_value, style)
            parts = _sections(row["question"], row["answer"], written_value, rng, cfg, answer)
            if cfg.share_wrong <= roll < cfg.share_wrong + cfg.share_malformed:
                defect = rng.choice(defects)
                text = _malformed(defect, parts, answer, value, _wrong_value(value, rng))
                kind, expected = f"malformed:{defect}", MALFORMED[defect]
            else:
                text = _assemble(parts, ["Plan", "Reasoning", "Evidence", "Sanity_check"], answer)
            items.append(Item(f"{qi}-{k}", text, row["answer"], row["question"], expected, kind, style))
    return items


def _fill(size: int, line) -> str:
    """``line(0) + line(1) + ...`` up to about ``size`` characters (distinct lines)."""
    out, n, i = [], 0, 0
    while n < size:
        s = line(i)
        out.append(s)
        n += len(s)
        i += 1
    return "".join(out)


def _sections_skeleton(reasoning: str, sanity: str, answer: str) -> str:
    return (
        f"<reasoning>\nPlan:\nAdd.\nReasoning:\n{reasoning}\nEvidence:\nCALC: 1 = 1\n"
        f"Sanity_check:\n{sanity}\n</reasoning>\n<answer>{answer}</answer>"
    )


def _skeleton(evidence: str = "CALC: 6*7 = 42", answer: str = "42") -> str:
    return (
        "<reasoning>\nPlan:\nMultiply.\nReasoning:\nSix sevens.\nEvidence:\n"
        f"{evidence}\nSanity_check:\nFine.\n</reasoning>\n<answer>{answer}</answer>"
    )


def build_adversarial(size: int = 200_000) -> list[Case]:
    """Degenerate completions of about ``size`` characters each (reference "42")."""

    def rep(unit: str) -> str:
        return unit * max(1, size // len(unit))

    half = size // 2
    cases = {
        "repeated_open_reasoning": rep("<reasoning>"),
        "repeated_reasoning_blocks": rep("<reasoning>x</reasoning>"),
        "repeated_open_answer": "<answer>" + rep("<answer>"),
        "alternating_tags": rep("<reasoning><answer></reasoning></answer>"),
        "answer_200k_digits": _skeleton(answer=rep("9")),
        "answer_decimal_200k_zeros": _skeleton(answer="0." + rep("0") + "1"),
        "answer_commas": _skeleton(answer=rep("1,") + "1"),
        "answer_huge_exponent": _skeleton(answer="1e999999999 " + rep(" ")),
        "repeated_boxed": _skeleton(answer=rep("\\boxed{")),
        "power_tower_stars": _skeleton(evidence="CALC: " + rep("9**") + "9 = 1"),
        "power_tower_caret": _skeleton(evidence="CALC: " + rep("2^") + "2 = 4"),
        "claims_16k": _skeleton(evidence="CALC: 1+1=2\n" * 16_000),
        "expression_100kb": _skeleton(evidence="CALC: " + "1+" * (half // 2) + "1 = 2\n" + "x" * half),
        "nested_parens": _skeleton(
            evidence="CALC: " + "(" * (half // 2) + "1" + ")" * (half // 2) + " = 1\n" + "x" * half
        ),
        "annotations": _skeleton(evidence=rep("<<12*3=36>>")),
        "repeated_headings": "<reasoning>\n" + rep("Plan:\nReasoning:\n") + "</reasoning><answer>42</answer>",
        "headings_no_close": rep("<reasoning>Plan:Reasoning:Evidence:Sanity_check:"),
        "lazy_regex_bait": rep("<reasoning> Plan: Reasoning: Evidence: Sanity_check: </reasoning> <answer>"),
        "digits_in_reasoning": "<reasoning>\nPlan:\n" + rep("1") + "\n</reasoning><answer>42</answer>",
        "newlines": rep("\n") + _skeleton(),
        "chain_claims": _skeleton(evidence=rep("1 + 1 = 2 + 0 = 2 ")),
        # issue 10: shapes that were linear but over the 10 ms promise
        "digits_in_reasoning_and_sanity": _sections_skeleton(
            reasoning="1" * (size * 9 // 20), sanity="1" * (size * 9 // 20), answer="1"
        ),
        "repeated_plan_headings": "<reasoning>\n" + rep("Plan:\n") + "</reasoning><answer>42</answer>",
        "calc_lines_distinct": _skeleton(evidence=_fill(size, lambda i: f"CALC:{i}={i}\n")),
        "calc_lines_short_pairs": _fill(size, lambda i: f"CALC:{i % 97}={i // 97}\n"),
        "calc_lines_operations": _skeleton(
            evidence=_fill(size, lambda i: f"CALC: {i}+{i % 7}*2 = {i + 2 * (i % 7)}\n")
        ),
    }
    return [Case(name, text, "42") for name, text in cases.items()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, required=True, help="directory for corpus.jsonl / adversarial.jsonl")
    p.add_argument("--per-question", type=int, default=CorpusConfig.per_question)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    a.write.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(CorpusConfig(per_question=a.per_question, limit=a.limit))
    with (a.write / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for it in corpus:
            fh.write(json.dumps(asdict(it)) + "\n")
    with (a.write / "adversarial.jsonl").open("w", encoding="utf-8") as fh:
        for case in build_adversarial():
            fh.write(json.dumps(asdict(case)) + "\n")
    print(f"wrote {len(corpus)} corpus items and the adversarial set to {a.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
