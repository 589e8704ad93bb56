"""The framework tier: real TRL, transformers, OpenRLHF and verl code driving the adapters.

These tests run in their own virtual environments (``.ci/run`` stage 3; ``docs/adapters/``
gives the versions and commands), never in the core or train venvs: ``tests/frameworks/hf``
needs torch + transformers + TRL (+ OpenRLHF's modules), ``tests/frameworks/verl`` needs verl.

Checks that compare with Tunix need a model exported and run by the ``[train]`` venv: the
``tunix_reference`` fixture runs ``tests/frameworks/tunix_reference.py`` with the Python named by
``DSA_CAST_TRAIN_PYTHON`` (default: the repository's ``.venv/bin/python``) and fails, rather
than skips, when that interpreter is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# One intra-op thread: on a 2-core machine shared with other jobs, torch's second thread spins
# waiting for the first (a 1 s fit took 37 s with 2 threads under load); these models are tiny.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("tunix_reference.py")
TRAIN_PYTHON_ENV = "DSA_CAST_TRAIN_PYTHON"


def train_python() -> str:
    """The interpreter of the ``[train]`` venv, or a test failure saying how to name one."""
    path = os.environ.get(TRAIN_PYTHON_ENV) or str(ROOT / ".venv" / "bin" / "python")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path}: no [train] Python for the Tunix side of this check; create it with "
                    f"`python3 -m venv .venv && .venv/bin/pip install -e '.[test,demo]'` or set "
                    f"{TRAIN_PYTHON_ENV}", pytrace=False)
    return path


def run_tunix_reference(out: Path, source: str, timeout_s: float) -> dict:
    """Export ``source`` and record Tunix's prompt ids and greedy tokens (see the script)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([train_python(), str(SCRIPT), "--out", str(out), "--source", source],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}",
                    pytrace=False)
    sys.stderr.write(proc.stdout)
    return json.loads((out / "reference.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> tuple[Path, dict]:
    """``(hf_dir, reference)`` for the tiny random Gemma 3 exported by the project."""
    out = tmp_path_factory.mktemp("tiny") / "ref"
    return out / "hf", run_tunix_reference(out, "tiny", timeout_s=600)


@pytest.fixture(scope="session")
def gemma270m_reference(tmp_path_factory) -> tuple[Path, dict]:
    """``(hf_dir, reference)`` for the PyPI Gemma 3 270M exported by the project (slow tier:
    the [train] process peaks at about 3.1 GiB, converting the model first if the cache is cold)."""
    out = tmp_path_factory.mktemp("gemma270m") / "ref"
    return out / "hf", run_tunix_reference(out, "gemma3-270m-pypi", timeout_s=900)
