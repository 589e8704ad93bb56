"""The shell commands that README.md, examples/README.md and docs/ show, for the tests that run them.

Commands come from fenced ``bash``/``sh``/``shell`` blocks (one per line, ``\\`` continuations
joined, ``&&`` chains split, ``# comments`` and a trailing ``&`` (run in the background) dropped),
from ``text`` blocks as ``$ command`` lines followed by the output the page shows, and from inline
code spans that are whole commands (``python``/``pip`` with arguments). A fenced block whose first
line is ``# NAME.ext`` defines a file the page's later commands use (``my-run.toml``).

Every command is classified, so a new one cannot slip in untested: ``run`` (the grading CLI and
the corpus script: run in a scratch folder and, where the page shows output, compared with it;
``run-train`` the same for commands that need the ``[train]`` extra), ``parse`` (trainer commands:
run with ``--print-config``, which checks every flag, preset, file and override without
training; the training itself is covered by the trainer tests and the CI's tiny pipeline) or
``skip`` with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`((?:python3?|pip) [^`\n]+)`(?!`)")
FILE_HEADER = re.compile(r"#\s*([\w.-]+\.(?:toml|ya?ml|json|txt|jsonl))\s*$")
PLACEHOLDER = re.compile(r"\b(?:DIR|FILE|RUN|CKPT|NAME|TARGET|OUTPUTS|REFS|COMPLETION|TEXT|VALUE|K=V|N)\b"
                         r"|\[--|\.\.\.$|^\.\.\.")

SKIP = (
    (re.compile(r"^(pip|python3? -m pip) "), "installs packages (the CI's install step does this)"),
    (re.compile(r"^\.venv[\w-]*/bin/pip "), "installs packages into a test tier's venv (.ci/run does this)"),
    (re.compile(r"^(DSA_CAST_TRAIN_PYTHON=\S+ )?\.venv[\w-]*/bin/python -m pytest\b"),
     "runs a test tier (this is the test suite)"),
    (re.compile(r"^python3? -m venv\b|^\. \.venv/bin/activate$|^source "), "creates or enters a virtual environment"),
    (re.compile(r"^python3? -m pytest\b"), "runs the test suite (this is the test suite)"),
    (re.compile(r"^export "), "sets environment variables"),
    (re.compile(r"^python3? -m (openrlhf|verl)\."), "another framework's trainer (docs/adapters: needs GPUs and that framework)"),
    (re.compile(r"^python3? -c .*kagglehub"), "downloads from Kaggle (network and an account)"),
    (re.compile(r"^gcloud "), "runs on Google Cloud TPU VMs (an account and a pod slice)"),
    (re.compile(r"^(sbatch|srun) "), "submits to a Slurm cluster"),
    (re.compile(r"^wait$"), "waits for the commands started in the background above"),
    (re.compile(r"^python3? benchmarks/(bench_grading|converter_acceptance|rubric_throughput|bench_grpo|bench_grpo_memory|bench_grade_jobs|bench_multihost)\.py"),
     "a benchmark (minutes of CPU; run by hand, results in benchmarks/results/)"),
)


@dataclass(frozen=True)
class DocCommand:
    """One command as a page shows it."""

    where: str
    """``docs/cli.md:120``."""
    command: str
    expected: tuple[str, ...] | None
    """The output lines the page shows after it (``...`` elides), or None when it shows none."""
    files: tuple[tuple[str, str], ...]
    """``(name, content)`` of the files the page defined before this command."""

    @property
    def kind(self) -> tuple[str, str]:
        return classify(self.command)


def doc_files() -> list[Path]:
    docs = sorted(p for p in (REPO / "docs").rglob("*.md") if "results" not in p.relative_to(REPO / "docs").parts)
    return [REPO / "README.md", REPO / "examples" / "README.md", *docs]


def _strip_comment(line: str) -> str:
    """``cmd  # note`` -> ``cmd`` (a ``#`` inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _shell_lines(body: str) -> Iterator[tuple[int, str]]:
    """(line offset, command) of a shell block: continuations joined, comments and chains split."""
    pending, start = "", 0
    for offset, raw in enumerate(body.splitlines()):
        if not pending:
            start = offset
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        text = _strip_comment(pending + line.strip()).strip()
        pending = ""
        for part in text.split(" && "):
            part = part.strip()
            if part.endswith(" &"):  # started in the background: the same command
                part = part[:-2].rstrip()
            if part:
                yield start, part


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def extract(paths: Sequence[Path] | None = None) -> list[DocCommand]:
    """Every command of every page, in page order."""
    out: list[DocCommand] = []
    for path in paths or doc_files():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO)
        files: list[tuple[str, str]] = []
        fenced = [(m.start(), m.end()) for m in FENCE.finditer(text)]
        events: list[tuple[int, DocCommand | tuple[str, str]]] = []
        for m in FENCE.finditer(text):
            lang, body = m.group(1), m.group(2)
            body_line = _line_of(text, m.start()) + 1
            first = body.splitlines()[0] if body.strip() else ""
            header = FILE_HEADER.match(first.strip())
            if header and lang not in ("bash", "sh", "shell", "text", "console"):
                events.append((m.start(), (header.group(1), body.split("\n", 1)[1] if "\n" in body else "")))
                continue
            if lang in ("bash", "sh", "shell"):
                for offset, cmd in _shell_lines(body):
                    events.append((m.start(), DocCommand(f"{rel}:{body_line + offset}", cmd, None, ())))
            elif lang in ("text", "console"):
                lines = body.splitlines()
                for i, line in enumerate(lines):
                    if line.startswith("$ "):
                        shown = []
                        for later in lines[i + 1:]:
                            if later.startswith("$ "):
                                break
                            shown.append(later)
                        events.append((m.start(), DocCommand(f"{rel}:{body_line + i}", line[2:].strip(),
                                                             tuple(shown) if shown else None, ())))
        for m in INLINE.finditer(text):
            if any(a <= m.start() < b for a, b in fenced):
                continue
            cmd = m.group(1).strip()
            args = cmd.split()[3:] if cmd.split()[1:2] == ["-m"] else cmd.split()[1:]
            if any(a.startswith("-") or "/" in a or "." in a for a in args):
                events.append((m.start(), DocCommand(f"{rel}:{_line_of(text, m.start())}", cmd, None, ())))
        for _, event in sorted(events, key=lambda e: e[0]):
            if isinstance(event, tuple):
                files.append(event)
            else:
                out.append(DocCommand(event.where, event.command, event.expected, tuple(files)))
    return out


def classify(command: str) -> tuple[str, str]:
    """``(kind, why)``: ``run``, ``parse`` or ``skip``; ``unknown`` for a command no rule covers."""
    for pattern, reason in SKIP:
        if pattern.search(command):
            return "skip", reason
    if PLACEHOLDER.search(command):
        return "skip", "a synopsis (placeholders in capitals or [--options])"
    if re.match(r"^python3? -m dsa_cast_train\.evaluate --regrade\b", command):
        return "run-train", "regrades saved files (needs numpy): run as written"
    if re.match(r"^python3? -m dsa_cast_train\.verl_data\b", command):
        return "run-train", "writes verl parquet from the embedded GSM8K (needs pyarrow): run as written"
    if re.match(r"^python3? -m dsa_cast_train\.(sft|evaluate|grpo|pipeline)\b", command):
        return "parse", "trainer command: flags, preset and files checked with --print-config"
    if re.match(r"^python3? -m dsa_cast_train\.export\b", command):
        return "skip", "exports a trained run (covered by tests/train/test_export.py)"
    if re.match(r"^python3? -m dsa_cast\b(?!_)|^python3? benchmarks/corpus\.py\b", command):
        return "run", "grading CLI / corpus script"
    return "unknown", "no rule: add one in tests/doc_commands.py"


LINKED = ("examples", "benchmarks", "docs")
"""Folders of this checkout linked into a scratch folder: what the page commands read."""


def scratch_env(root: Path, python: str) -> dict[str, str]:
    """The environment for page commands: ``python`` on PATH is ``python`` (a shim in ``root``)."""
    import os

    bindir = root / ".bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONIOENCODING": "utf-8"}


def page_folder(root: Path, cmd: DocCommand) -> Path:
    """The scratch folder of ``cmd``'s page (one per page: a later command may read what an earlier
    one wrote), holding links to :data:`LINKED` and the files the page defined."""
    folder = root / cmd.where.split(":")[0].replace("/", "_")
    if not folder.is_dir():
        folder.mkdir()
        for name in LINKED:
            (folder / name).symlink_to(REPO / name)
    for name, content in cmd.files:
        (folder / name).write_text(content, encoding="utf-8")
    return folder


def run_shown(cmd: DocCommand, folder: Path, env: dict[str, str], timeout: float = 300) -> str | None:
    """Run ``cmd`` with bash in ``folder``: None when it exits 0 and prints what the page shows,
    else what went wrong."""
    import subprocess

    proc = subprocess.run(["bash", "-c", cmd.command], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return f"{cmd.where}: exit status {proc.returncode}: {cmd.command}\n{proc.stderr[-2000:]}"
    if cmd.expected is not None:
        problem = matches(cmd.expected, proc.stdout.splitlines())
        if problem:
            return f"{cmd.where}: {problem}\n--- printed:\n{proc.stdout}"
    return None


def matches(expected: Sequence[str], actual: Sequence[str]) -> str | None:
    """None when ``actual`` shows ``expected`` line by line: a ``...`` line stands for any lines,
    a line ending in ``...`` for any line starting with the text before it. Else what differs."""
    exp = [e.rstrip() for e in expected]
    act = [a.rstrip() for a in actual]

    def same(e: str, a: str) -> bool:
        return a.startswith(e[:-3].rstrip()) if e.endswith("...") and e.strip() != "..." else e == a

    def walk(i: int, j: int) -> bool:
        while i < len(exp):
            if exp[i].strip() == "...":
                return any(walk(i + 1, k) for k in range(j, len(act) + 1))
            if j >= len(act) or not same(exp[i], act[j]):
                return False
            i, j = i + 1, j + 1
        return j == len(act)

    if walk(0, 0):
        return None
    for i, e in enumerate(exp):
        if e.strip() != "..." and not any(same(e, a) for a in act):
            return f"the page shows {e!r}, the command did not print it"
    return "the lines differ in order or number"
