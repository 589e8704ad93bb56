"""GSM8K -> DSA converter acceptance: does every converted record earn the dsa-cast maximum?

Converts every record of the GSM8K splits with :func:`dsa_cast_train.data.gsm8k_to_dsa` and grades
the response with ``dsa_cast.score.grade(response, answer)`` (the ``dsa-cast`` rubric, the record's
``####`` answer as reference). Reported per split: records, records at the maximum with no issue
code, the exceptions counted by issue code (with their ids), where the Evidence ``CALC:`` lines
came from, conversion and grading time, and the same grading with ``question=`` given (stricter:
claims must use the question's numbers). Results go to ``benchmarks/results/converter_acceptance.json``.

    python benchmarks/converter_acceptance.py                       # the embedded GSM8K
    python benchmarks/converter_acceptance.py --gsm8k DIR --splits train
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from dsa_cast.score import grade
from dsa_cast_train.data import default_gsm8k_dir, gsm8k_to_dsa, load_gsm8k, parse_solution
from dsa_cast_train.data.gsm8k import with_unit_conversion

RESULTS = Path(__file__).resolve().parent / "results"


def _grade_all(records: list[dict[str, Any]], responses: list[str], with_question: bool) -> dict[str, Any]:
    by_code: dict[str, list[str]] = defaultdict(list)
    at_max = 0
    correct = 0
    t0 = time.perf_counter()
    for rec, response in zip(records, responses, strict=True):
        g = grade(response, rec["answer"], question=rec["question"] if with_question else None)
        correct += bool(g.correct)
        if g.total == g.max_total and not g.issues:
            at_max += 1
            continue
        for code in dict.fromkeys(g.issues) or ("below_max_without_issue",):
            by_code[code].append(rec["id"])
    seconds = time.perf_counter() - t0
    return {
        "records": len(records),
        "at_max_no_issues": at_max,
        "exceptions": len(records) - at_max,
        "correct": correct,
        "exceptions_by_code": {code: len(ids) for code, ids in sorted(by_code.items())},
        "exception_ids_by_code": dict(sorted(by_code.items())),
        "grade_seconds": round(seconds, 3),
    }


def run_split(directory: Path, split: str) -> dict[str, Any]:
    records = load_gsm8k(directory, split)
    t0 = time.perf_counter()
    examples = [gsm8k_to_dsa(r) for r in records]
    convert_s = time.perf_counter() - t0
    origins: Counter[str] = Counter()
    restating = skipped = 0
    for rec in records:
        sol = with_unit_conversion(rec["question"], parse_solution(rec["answer"]))
        origins.update(c.origin for c in sol.evidence)
        restating += sum(c.restates_number for c in sol.calculations)
        skipped += len(sol.skipped)
    responses = [e.response for e in examples]
    return {
        "split": split,
        "convert_seconds": round(convert_s, 3),
        "convert_records_per_s": round(len(records) / convert_s, 1),
        "calc_lines_by_origin": dict(sorted(origins.items())),
        "annotations_restating_a_number": restating,
        "annotations_without_calculation": skipped,
        "grade": _grade_all(records, responses, with_question=False),
        "grade_with_question": _grade_all(records, responses, with_question=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gsm8k",
        type=Path,
        default=default_gsm8k_dir(),
        help="directory holding train.jsonl / test.jsonl (default: $DSA_CAST_GSM8K, else the embedded copy)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--out", type=Path, default=RESULTS / "converter_acceptance.json")
    args = parser.parse_args(argv)
    results = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "splits": [run_split(args.gsm8k, s) for s in args.splits],
    }
    for r in results["splits"]:
        g, gq = r["grade"], r["grade_with_question"]
        print(
            f"[{r['split']}] {g['records']} records converted in {r['convert_seconds']} s "
            f"({r['convert_records_per_s']}/s); CALC lines by origin {r['calc_lines_by_origin']}"
        )
        print(
            f"  grade(response, answer):           {g['at_max_no_issues']} at the maximum, "
            f"{g['exceptions']} exceptions {g['exceptions_by_code']} ({g['grade_seconds']} s)"
        )
        for code, ids in g["exception_ids_by_code"].items():
            print(f"    {code}: {', '.join(ids)}")
        print(
            f"  grade(response, answer, question): {gq['at_max_no_issues']} at the maximum, "
            f"{gq['exceptions']} exceptions {gq['exceptions_by_code']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
