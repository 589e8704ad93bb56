"""Grade-for-grade equality of the core before and after a change (a performance pass must not
change a single grade).

Grades every corpus item (``benchmarks/corpus.py``, GSM8K-built), a seeded fuzz set (corpus items
cut, spliced and sprinkled with tags, headings, numbers and claim syntax; ``--fuzz N``) and every
adversarial case with every registered rubric, and writes or compares the full results: total, components, correct,
predicted answer and issue codes of each grade (floats compared by ``repr``, i.e. bit for bit).

    python benchmarks/grade_equality.py --write /tmp/grades-before.json   # on the old code
    python benchmarks/grade_equality.py --check /tmp/grades-before.json   # on the new code

``--check`` prints the first differences and exits 1 when any grade differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from corpus import CorpusConfig, build_adversarial, build_corpus  # noqa: E402


def _record(g) -> list:
    return [repr(g.total), {k: repr(v) for k, v in g.components.items()}, g.correct, g.predicted, list(g.issues)]


_FUZZ_PIECES = (
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "Plan:",
    "Reasoning:",
    "Evidence:",
    "Sanity_check:",
    "\n",
    " ",
    "CALC: ",
    " = ",
    "<<3*4=12>>",
    "1,234",
    "-0.5",
    "3/4",
    "1e5",
    "$",
    "%",
    "42",
    "2^10",
    "sqrt(16)",
    "(",
    ")",
    "*",
    "+",
    "\\boxed{7}",
    "####",
    "<end_of_turn>",
    "\u00a0",
    "\u2212",
    "\uff14",
    "x",
    "The answer is",
    "..",
    "10^400",
    "CALC: 1/0 = 0",
    "CALC: 2**3**2 = 512",
)


def fuzz(items: list[tuple[str, str, str, str | None]], n: int, seed: int = 11) -> list:
    """``n`` seeded mutations of corpus items: a pure function of ``items``, ``n`` and ``seed``."""
    import random

    rng = random.Random(seed)
    out = []
    for k in range(n):
        _, text, ref, q = items[rng.randrange(len(items))]
        for _ in range(rng.randint(1, 6)):
            op, at = rng.randrange(4), rng.randint(0, len(text))
            if op == 0:  # insert a piece
                text = text[:at] + rng.choice(_FUZZ_PIECES) + text[at:]
            elif op == 1:  # delete a run
                text = text[:at] + text[at + rng.randint(1, 40) :]
            elif op == 2:  # splice in part of another item
                other = items[rng.randrange(len(items))][1]
                b = rng.randint(0, len(other))
                text = text[:at] + other[b : b + rng.randint(1, 200)] + text[at:]
            else:  # cut
                text = text[:at]
        out.append((f"fuzz:{k}", text, ref, q))
    return out


def grades(limit: int | None, per_question: int, size: int, n_fuzz: int = 0) -> dict[str, dict[str, list]]:
    """``{rubric: {item id: record}}`` over the corpus, the fuzz set and the adversarial set."""
    from dsa_cast.rubrics import RUBRICS
    from dsa_cast.score import grade

    items = [
        (it.id, it.completion, it.reference, it.question or None)
        for it in build_corpus(CorpusConfig(per_question=per_question, limit=limit))
    ]
    items += fuzz(items, n_fuzz)
    items += [(f"adversarial:{c.name}", c.completion, c.reference, None) for c in build_adversarial(size)]
    return {
        name: {i: _record(grade(text, ref, rubric=name, question=q)) for i, text, ref, q in items} for name in RUBRICS
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--write", type=Path, help="write the grades to this JSON file")
    what.add_argument("--check", type=Path, help="compare with grades written earlier")
    p.add_argument("--limit", type=int, default=None, help="GSM8K items (default: all)")
    p.add_argument("--per-question", type=int, default=CorpusConfig.per_question)
    p.add_argument("--size", type=int, default=200_000, help="adversarial case size (chars)")
    p.add_argument("--fuzz", type=int, default=5000, help="seeded fuzz items (default 5000)")
    a = p.parse_args(argv)
    now = grades(a.limit, a.per_question, a.size, a.fuzz)
    digest = hashlib.sha256(json.dumps(now, sort_keys=True).encode()).hexdigest()
    n = sum(len(v) for v in now.values())
    if a.write:
        a.write.write_text(json.dumps(now, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {n} grades ({len(now)} rubrics), sha256 {digest}, to {a.write}")
        return 0
    before = json.loads(a.check.read_text(encoding="utf-8"))
    diffs = []
    for rubric, recs in before.items():
        for key, old in recs.items():
            new = now.get(rubric, {}).get(key)
            if new != old:
                diffs.append((rubric, key, old, new))
    missing = sum(1 for r, recs in now.items() for k in recs if k not in before.get(r, {}))
    for rubric, key, old, new in diffs[:10]:
        print(f"DIFF {rubric} {key}:\n  before {old}\n  after  {new}")
    print(f"{n} grades compared, {len(diffs)} differ, {missing} new; sha256 now {digest}")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
