"""The trainer commands the pages show parse as written: each is run in-process with
``--print-config`` (every flag, preset, config file and override checked, nothing trained) from a
scratch folder holding the files the page defines (e.g. my-run.toml); the ones that need the
``[train]`` extra but train nothing (``--regrade``) run as written."""

from __future__ import annotations

import importlib
import json
import shlex
import sys

import pytest

from tests.doc_commands import extract, page_folder, run_shown, scratch_env

PARSE = [c for c in extract() if c.kind[0] == "parse"]
RUN_TRAIN = [c for c in extract() if c.kind[0] == "run-train"]


def test_the_pages_show_trainer_commands():
    assert len(PARSE) >= 10
    assert any(c.where.startswith("README.md") for c in PARSE)


@pytest.mark.parametrize("cmd", PARSE, ids=[c.where for c in PARSE])
def test_trainer_command_parses(cmd, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, content in cmd.files:
        (tmp_path / name).write_text(content, encoding="utf-8")
    argv = shlex.split(cmd.command)
    assert argv[:2] == ["python", "-m"], cmd.command
    module = importlib.import_module(argv[2])
    args = argv[3:] + ([] if "--print-config" in argv else ["--print-config"])
    assert module.main(args) == 0, f"{cmd.where}: {cmd.command}\n{capsys.readouterr().err}"
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] and printed["model"]["source"]
    assert not list(tmp_path.glob("runs")), "--print-config must not create the run directory"


@pytest.mark.parametrize("cmd", RUN_TRAIN, ids=[c.where for c in RUN_TRAIN])
def test_page_command_needing_the_train_extra_runs_as_written(cmd, tmp_path):
    problem = run_shown(cmd, page_folder(tmp_path, cmd), scratch_env(tmp_path, sys.executable))
    assert problem is None, problem
