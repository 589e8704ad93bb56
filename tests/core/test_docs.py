"""Every command README.md, examples/README.md and docs/ show is classified, and the grading CLI and
corpus commands run as written (in a scratch folder holding only examples/ and benchmarks/), with
the output the page shows. The trainer commands are checked in tests/train/test_doc_commands.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.doc_commands import classify, extract, matches, page_folder, run_shown, scratch_env

COMMANDS = extract()
RUN = [c for c in COMMANDS if c.kind[0] == "run"]


def test_every_command_on_the_pages_is_classified():
    unknown = [f"{c.where}: {c.command}" for c in COMMANDS if c.kind[0] == "unknown"]
    assert not unknown, "commands no rule covers (run, parse or skip with a reason):\n" + "\n".join(unknown)
    kinds = {c.kind[0] for c in COMMANDS}
    assert {"run", "run-train", "parse", "skip"} <= kinds
    # the commands a newcomer meets first are real commands, not placeholders
    readme = [c for c in COMMANDS if c.where.startswith("README.md")]
    assert [c.kind[0] for c in readme if "dsa_cast " in c.command] == ["run", "run"]


def test_matching_rules():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"]) is None
    assert matches(["a", "b..."], ["a", "bcd"]) is None
    assert matches(["a"], ["a", "b"]) == "the lines differ in order or number"
    assert "'z'" in matches(["z"], ["a"])
    assert classify("python -m dsa_cast grade OUTPUTS.jsonl [--answers REFS.jsonl]")[0] == "skip"
    assert classify("rm -rf /")[0] == "unknown"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Folders where the commands run exactly as printed (see ``doc_commands.page_folder``), with
    `python` on PATH being this interpreter."""
    root = tmp_path_factory.mktemp("docs")
    return root, scratch_env(root, sys.executable)


@pytest.mark.parametrize("cmd", RUN, ids=[c.where for c in RUN])
def test_page_command_runs_as_written(cmd, scratch):
    root, env = scratch
    problem = run_shown(cmd, page_folder(root, cmd), env)
    assert problem is None, problem
