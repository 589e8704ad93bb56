"""GSM8K as verl parquet files whose prompts ask for the DSA format.

verl's own GSM8K preparation (``examples/data_preprocess/gsm8k.py``) appends "Let's think step
by step and output the final answer after '####'", which contradicts the DSA format the rewards
grade. This module writes the same verl row layout with the project's DSA system prompt instead:

``python -m dsa_cast_train.verl_data --out OUT [--gsm8k DIR]`` (GSM8K from ``DIR`` holding
``train.jsonl`` and ``test.jsonl``, by default the copy embedded in the package; ``--source hf``
reads ``openai/gsm8k`` through HuggingFace ``datasets``) writes ``OUT/train.parquet`` and
``OUT/test.parquet``, one row per problem::

    data_source   "dsa-cast/gsm8k"
    prompt        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": "72"}       # the number after '####'
    extra_info    {"split", "index", "question", "answer"}     # answer: the full GSM8K solution

With the Gemma chat template the prompt renders exactly as ``dsa_format.build_prompt(question)``
(the system prompt opens the user turn). The data source is deliberately not ``openai/gsm8k``:
if verl ignores the custom reward function (a wrong config key), its default scorer raises on
an unknown source instead of silently training on its own GSM8K reward.

Needs ``pyarrow`` (verl installs it), not the ``[train]`` extra. Existing outputs are never
replaced (exit status 2); each file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dsa_cast import io
from dsa_cast_train.data.dsa_format import SYSTEM_PROMPT

__all__ = ["DATA_SOURCE", "SPLITS", "verl_row", "write_parquet", "main"]

DATA_SOURCE = "dsa-cast/gsm8k"
SPLITS = ("train", "test")
ANSWER_MARKER = "####"


class VerlDataError(Exception):
    """An input or output problem; the message names the file (and line)."""


def ground_truth(answer: str) -> str:
    """The final answer of a GSM8K solution: the text after ``####``, commas removed (verl's rule)."""
    return answer.rsplit(ANSWER_MARKER, 1)[-1].strip().replace(",", "")


def verl_row(question: str, answer: str, split: str, index: int, *,
             system_prompt: str = SYSTEM_PROMPT) -> dict[str, Any]:
    """One verl RL row (see the module docstring); an empty ``system_prompt`` leaves it out."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": question})
    return {
        "data_source": DATA_SOURCE,
        "prompt": prompt,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth(answer)},
        "extra_info": {"split": split, "index": index, "question": question, "answer": answer},
    }


def write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` to ``path`` atomically (:func:`dsa_cast.io.atomic_output`: a temporary file in
    the same directory, fsync, rename)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise VerlDataError(f"writing parquet needs pyarrow (pip install pyarrow; verl installs it): {exc}") from exc
    table = pa.Table.from_pylist(list(rows))
    with io.atomic_output(path, "wb") as fh:  # a failure leaves the previous file and no temporary one
        pq.write_table(table, fh)


def _records(args: argparse.Namespace, split: str) -> Iterable[dict[str, Any]]:
    from dsa_cast_train.data.gsm8k import GSM8KUnavailable, load_gsm8k
    from dsa_cast_train.data.jsonl import DataFormatError

    try:
        return load_gsm8k(args.gsm8k, split, limit=args.limit, source=args.source)
    except (DataFormatError, FileNotFoundError, GSM8KUnavailable, ValueError) as exc:
        raise VerlDataError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dsa_cast_train.verl_data",
                                description="Write GSM8K as verl parquet with the DSA system prompt.")
    p.add_argument("--gsm8k", help="directory holding train.jsonl and test.jsonl (with --source local; "
                                   "default: $DSA_CAST_GSM8K, else the GSM8K copy embedded in the package)")
    p.add_argument("--source", default="local", choices=("local", "hf"),
                   help="local JSONL files (default) or HuggingFace datasets' openai/gsm8k")
    p.add_argument("--out", required=True, help="output directory (created; files in it are never replaced)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="default: train test")
    p.add_argument("--limit", type=int, default=None, help="at most this many problems per split")
    p.add_argument("--no-system-prompt", action="store_true",
                   help="leave the DSA system prompt out (the user turn holds only the question)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0, or 2 with ``error: ...`` on a bad input, a missing library or an existing output."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    out = Path(args.out)
    system = "" if args.no_system_prompt else SYSTEM_PROMPT
    try:
        targets = {split: out / f"{split}.parquet" for split in args.splits}
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise VerlDataError(f"{existing[0]}: exists; choose another --out (outputs are never replaced)")
        rows = {split: [verl_row(r["question"], r["answer"], split, i, system_prompt=system)
                        for i, r in enumerate(_records(args, split))] for split in args.splits}
        out.mkdir(parents=True, exist_ok=True)
        for split, path in targets.items():
            write_parquet(rows[split], path)
            print(f"wrote {path} ({len(rows[split])} rows)")
    except VerlDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
