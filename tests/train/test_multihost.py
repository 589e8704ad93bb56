"""Two JAX processes on localhost (CPU, gloo collectives), started like two hosts of a pod:
the same command with ``--coordinator/--num-processes/--process-id``.

- SFT then GRPO: both processes exit 0, compute the same losses (and SFT the losses of one
  process on the same data), write one committed checkpoint holding both processes' shards,
  and every metrics record appears once.
- Killing one process ends the other with an error within a bounded time.
- SIGTERM (a preempted VM) stops both at one checkpoint with status 143; the same command resumes.

Every child runs under a hard SIGKILL deadline: JAX catches SIGTERM, so a hung child would
otherwise outlive the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tunix")
pytestmark = [pytest.mark.train, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HARD_KILL_S = int(os.environ.get("DSA_CAST_TEST_HARD_KILL_S", "420"))
"""No child lives longer than this, whatever happens (about 1 min each on a quiet 2-core CPU)."""
HEARTBEAT_S = 10
"""``DSA_CAST_HEARTBEAT_SECONDS`` of the children: a dead peer is declared after this."""

OVERRIDES = (
    ("data.limit", 48),
    ("data.max_length", 256),
    ("data.system_prompt", "Answer in the DSA format."),
    ("sft.max_steps", 4),
    ("sft.micro_batch_size", 2),  # one row per process and step
    ("sft.eval_every_steps", 2),
    ("sft.eval_batches", 1),
    ("sft.save_every_steps", 2),
    ("sft.log_every_steps", 1),
    ("sft.num_samples", 1),
    ("sft.sample_max_new_tokens", 8),
    ("eval.max_prompt_length", 128),
    ("grpo.max_steps", 2),
    ("grpo.max_prompt_length", 128),
    ("grpo.max_new_tokens", 8),
    ("grpo.save_every_steps", 2),
)
"""The tiny preset shrunk to seconds per stage (and the 10 GSM8K prompts that fit 128 tokens)."""


def _set_args(pairs) -> list[str]:
    return [arg for key, value in pairs for arg in ("--set", f"{key}={json.dumps(value)}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSA_CAST_", "JAX_COORDINATOR"))}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu",
               DSA_CAST_HEARTBEAT_SECONDS=str(HEARTBEAT_S), PYTHONUNBUFFERED="1")
    return env


class Pair:
    """Two processes of one run; output to files; a hard SIGKILL deadline."""

    def __init__(self, stage: str, run_dir: Path, extra: list[str] = (), logs: Path | None = None):
        port = _free_port()
        self.logs = logs or run_dir.parent
        self.procs: list[subprocess.Popen] = []
        self.outs = [self.logs / f"{run_dir.name}.{stage}.p{i}.out" for i in range(2)]
        self.deadline = time.monotonic() + HARD_KILL_S
        for i in range(2):
            cmd = [sys.executable, "-m", f"dsa_cast_train.{stage}", "--preset", "tiny", *_set_args(OVERRIDES),
                   *extra, "--run-dir", str(run_dir), "--coordinator", f"127.0.0.1:{port}",
                   "--num-processes", "2", "--process-id", str(i)]
            with open(self.outs[i], "wb") as out:
                self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                                   start_new_session=True))

    def wait(self, timeout: float | None = None) -> list[int | None]:
        """Exit statuses (None: still running at ``timeout``); past the hard deadline, SIGKILL."""
        end = min(self.deadline, time.monotonic() + timeout) if timeout is not None else self.deadline
        while time.monotonic() < end and any(p.poll() is None for p in self.procs):
            time.sleep(0.2)
        if time.monotonic() >= self.deadline:
            self.kill()
        return [p.poll() for p in self.procs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def output(self, i: int) -> str:
        return self.outs[i].read_text(encoding="utf-8", errors="replace")

    def report(self) -> str:
        return "\n".join(f"--- process {i} (rc {p.poll()}):\n{self.output(i)[-3000:]}"
                         for i, p in enumerate(self.procs))


@pytest.fixture()
def pairs():
    started: list[Pair] = []
    yield started
    for pair in started:
        pair.kill()


def _wait_for(path: Path, pattern: str, pair: Pair, timeout: float = HARD_KILL_S) -> re.Match:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if m := re.search(pattern, text):
            return m
        assert all(p.poll() is None for p in pair.procs), pair.report()
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in {path} after {timeout} s\n{pair.report()}")


SFT_LINE = re.compile(r"step (\d+)/\d+\s+loss ([\d.]+)|eval at step (\d+): loss ([\d.]+)")


def _sft_losses(log: Path) -> list[tuple[str, int, float]]:
    out = []
    for m in SFT_LINE.finditer(log.read_text(encoding="utf-8")):
        if m.group(1):
            out.append(("train", int(m.group(1)), float(m.group(2))))
        else:
            out.append(("eval", int(m.group(3)), float(m.group(4))))
    return out


def _actor_losses(log: Path) -> list[str]:
    return re.findall(r"actor loss per update: (.+)", log.read_text(encoding="utf-8"))


def _committed_steps(root: Path) -> list[int]:
    """Checkpoint steps whose every item holds both processes' shards and is committed."""
    steps = []
    for step in sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        assert (step / "commit_success.txt").is_file() or (step / "_CHECKPOINT_METADATA").is_file(), step
        for item in (step / "model_params", step / "optimizer_state"):
            assert (item / "ocdbt.process_0").is_dir() and (item / "ocdbt.process_1").is_dir(), item
        steps.append(int(step.name))
    return steps


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_two_processes_train_sft_then_grpo_like_one(tmp_path, pairs):
    from dsa_cast_train import config, sft

    sft_dir = tmp_path / "sft"
    t0 = time.perf_counter()
    pairs.append(pair := Pair("sft", sft_dir))
    assert pair.wait() == [0, 0], pair.report()
    sft_seconds = time.perf_counter() - t0

    # both processes computed the same losses; process 1 wrote only its own log
    # (the order of a step's train and eval lines depends on when Tunix flushes the train metrics)
    losses = sorted(_sft_losses(sft_dir / "run.log"), key=lambda x: (x[1], x[0]))
    assert [(s, k) for s, k, _ in losses] == [("eval", 0), ("train", 1), ("eval", 2), ("train", 2),
                                              ("train", 3), ("eval", 4), ("train", 4)]
    assert sorted(_sft_losses(sft_dir / "run.process-1.log"), key=lambda x: (x[1], x[0])) == losses
    # process 0 wrote every record once, with the tokens of the whole batch
    records = sorted(_records(sft_dir / "metrics.jsonl"), key=lambda r: (r["step"], r["split"]))
    assert [(r["split"], r["step"]) for r in records] == [(s, k) for s, k, _ in losses]
    assert {p.name for p in sft_dir.iterdir()} >= {"run.json", "config.json", "result.json", "data_stats.json",
                                                   "samples.jsonl", "loss_curve.png", "run.log",
                                                   "run.process-1.log"}
    assert not list(sft_dir.glob(".shared-check-*"))
    # one checkpoint tree with both processes' shards
    assert _committed_steps(sft_dir / "checkpoints") == [2, 4]
    result = json.loads((sft_dir / "result.json").read_text())
    assert result["final_step"] == 4 and result["resumed"] is False

    # the same run on one process: same batches, same losses, same token counts
    one = sft.run(config.load_config("tiny", overrides=OVERRIDES), tmp_path / "sft-one")
    assert [round(x, 4) for x in one.train_losses] == [v for s, _, v in losses if s == "train"]
    assert [round(v, 4) for _, v in one.eval_losses] == [v for s, _, v in losses if s == "eval"]
    one_tokens = [r["tokens"] for r in _records(tmp_path / "sft-one" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["tokens"] for r in records if r["split"] == "train"] == one_tokens
    assert result["tokens"] == one.tokens

    grpo_dir = tmp_path / "grpo"
    pairs.append(pair := Pair("grpo", grpo_dir, ["--init-checkpoint", str(sft_dir / "checkpoints")]))
    assert pair.wait() == [0, 0], pair.report()
    actor = _actor_losses(grpo_dir / "run.log")
    assert len(actor) == 1 and len(actor[0].split()) == 2
    assert _actor_losses(grpo_dir / "run.process-1.log") == actor
    records = _records(grpo_dir / "metrics.jsonl")
    train = [r["step"] for r in records if r["mode"] == "train"]
    assert train == [1, 2]  # once each, from process 0
    rollouts = _records(grpo_dir / "rollouts.jsonl")
    assert len(rollouts) == sum(r["n"] for r in records)
    assert 2 in _committed_steps(grpo_dir / "checkpoints" / "actor")
    assert "GRPO on 2 processes: each rolls out the same 2 prompts" in (grpo_dir / "run.log").read_text()
    summary = json.loads((grpo_dir / "grpo_summary.json").read_text())
    assert summary["actor_steps"] == 2
    print(f"two-process SFT (4 steps, whole command): {sft_seconds:.1f} s; one-process SFT: "
          f"{one.total_seconds:.1f} s; SFT losses {[v for s, _, v in losses if s == 'train']}; "
          f"GRPO actor losses {actor[0]}")


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_one_process_ends_the_other_with_an_error(tmp_path, pairs, victim):
    run_dir = tmp_path / "run"
    pairs.append(pair := Pair("sft", run_dir, _set_args([("sft.max_steps", 2000), ("sft.save_every_steps", 5000),
                                                         ("sft.eval_every_steps", 5000), ("sft.num_samples", 0)])))
    _wait_for(run_dir / "run.log", r"step 2/2000", pair)
    os.killpg(pair.procs[victim].pid, signal.SIGKILL)
    t_kill = time.monotonic()
    survivor = 1 - victim
    codes = pair.wait(timeout=HEARTBEAT_S * 4 + 30)
    took = time.monotonic() - t_kill
    assert codes[survivor] is not None, f"process {survivor} still runs {took:.0f} s after the kill\n{pair.report()}"
    assert codes[survivor] != 0
    out = pair.output(survivor)
    assert (f"error: process {survivor} of 2 failed" in out
            or "JAX distributed service detected fatal errors" in out), pair.report()
    print(f"killed process {victim}; process {survivor} exited with {codes[survivor]} after {took:.1f} s")


def test_sigterm_stops_both_at_one_checkpoint_and_the_same_command_resumes(tmp_path, pairs):
    run_dir = tmp_path / "run"
    extra = _set_args([("sft.max_steps", 2000), ("sft.save_every_steps", 5000), ("sft.eval_every_steps", 5000),
                       ("sft.num_samples", 0)])
    pairs.append(pair := Pair("sft", run_dir, extra))
    _wait_for(run_dir / "run.log", r"step 3/2000", pair)
    os.kill(pair.procs[1].pid, signal.SIGTERM)  # one host gets the notice; both must stop
    t_term = time.monotonic()
    assert pair.wait(timeout=120) == [143, 143], pair.report()
    took = time.monotonic() - t_term
    steps = _committed_steps(run_dir / "checkpoints")
    assert len(steps) == 1 and 3 <= steps[0] < 2000, steps
    stop = steps[0]
    train = [r["step"] for r in _records(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert train == list(range(1, stop + 1))
    for i in range(2):
        assert f"stopped by SIGTERM (preemption) after saving the checkpoint of step {stop}" in pair.output(i)

    (tmp_path / "resume").mkdir()
    pairs.append(pair := Pair("sft", run_dir, [*extra, *_set_args([("sft.max_steps", stop + 2)])],
                              logs=tmp_path / "resume"))
    assert pair.wait() == [0, 0], pair.report()
    assert f"restored checkpoint step {stop} of {stop + 2}" in (run_dir / "run.log").read_text()
    train = [r["step"] for r in _records(run_dir / "metrics.jsonl") if r["split"] == "train"]
    assert train == list(range(1, stop + 3))
    print(f"SIGTERM to process 1: both stopped at checkpoint step {stop} within {took:.1f} s")
