"""Every command README.md, examples/README.md and docs/ show is classified, and the grading CLI and
corpus commands run as written (in a scratch folder holding only examples/ and benchmarks/), with
the output the page shows. The trainer commands are checked in tests/train/test_doc_commands.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.doc_commands import REPO, classify, extract, matches

COMMANDS = extract()
RUN = [c for c in COMMANDS if c.kind[0] == "run"]


def test_every_command_on_the_pages_is_classified():
    unknown = [f"{c.where}: {c.command}" for c in COMMANDS if c.kind[0] == "unknown"]
    assert not unknown, "commands no rule covers (run, parse or skip with a reason):\n" + "\n".join(unknown)
    kinds = {c.kind[0] for c in COMMANDS}
    assert {"run", "parse", "skip"} <= kinds
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
    """A folder per page, each with examples/ and benchmarks/ (links to this checkout), and
    `python` on PATH being this interpreter: the commands run there exactly as printed, a page's
    commands in order in its own folder (a later one may read what an earlier one wrote)."""
    root = tmp_path_factory.mktemp("docs")
    for page in {c.where.split(":")[0] for c in RUN}:
        folder = root / page.replace("/", "_")
        folder.mkdir()
        for name in ("examples", "benchmarks"):
            (folder / name).symlink_to(REPO / name)
    bindir = root / ".bin"
    bindir.mkdir()
    shim = bindir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONIOENCODING": "utf-8"}
    return root, env


@pytest.mark.parametrize("cmd", RUN, ids=[c.where for c in RUN])
def test_page_command_runs_as_written(cmd, scratch):
    root, env = scratch
    root = root / cmd.where.split(":")[0].replace("/", "_")
    for name, content in cmd.files:
        (root / name).write_text(content, encoding="utf-8")
    proc = subprocess.run(["bash", "-c", cmd.command], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{cmd.where}: {cmd.command}\n{proc.stderr[-2000:]}"
    if cmd.expected is not None:
        problem = matches(cmd.expected, proc.stdout.splitlines())
        assert problem is None, f"{cmd.where}: {problem}\n--- printed:\n{proc.stdout}"
