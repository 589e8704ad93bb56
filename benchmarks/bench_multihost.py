"""Two JAX processes against one: step time and losses of the tiny SFT and GRPO.

The same commands as a user runs them (``python -m dsa_cast_train.sft`` / ``.grpo``), once as one
process and once as two processes on this machine (``--coordinator 127.0.0.1:PORT
--num-processes 2 --process-id I``, one CPU device each, gloo collectives), on the tiny model:

* SFT: ``--sft-steps`` updates of ``sft.micro_batch_size`` sequences of ``data.max_length``
  tokens; the step time is the median of ``metrics.jsonl``'s ``seconds`` after the first
  (compiling) update;
* GRPO from that SFT checkpoint: ``--grpo-steps`` steps; the step time is the median interval
  between successive reward records after the first.

Also reported: each run's losses (SFT train/eval from ``metrics.jsonl``, GRPO actor loss per
update from the run log; for two processes from both processes' logs), whether the processes
logged equal losses, the largest difference between the one- and two-process losses, and the
wall time of each whole command. Every child runs under a hard SIGKILL deadline.
Results: ``benchmarks/results/bench_multihost.json``.

    python benchmarks/bench_multihost.py                 # 12 SFT updates, 6 GRPO steps
    python benchmarks/bench_multihost.py --sft-steps 30 --grpo-steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEADLINE_S = 1800

SETTINGS = (
    ("data.limit", 96),
    ("data.max_length", 256),
    ("data.system_prompt", "Answer in the DSA format."),
    ("sft.micro_batch_size", 4),
    ("sft.eval_every_steps", 1000),
    ("sft.eval_batches", 1),
    ("sft.log_every_steps", 1),
    ("sft.num_samples", 0),
    ("grpo.max_prompt_length", 128),
    ("grpo.max_new_tokens", 16),
    ("grpo.eval_every_steps", 1000),
    ("grpo.eval_prompts", 0),
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(stage: str, run_dir: Path, processes: int, extra: list[str]) -> tuple[float, list[int]]:
    """Run ``stage`` as ``processes`` processes; returns (wall seconds, exit statuses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSA_CAST_", "JAX_COORDINATOR"))}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), JAX_PLATFORMS="cpu")
    args = [arg for k, v in SETTINGS for arg in ("--set", f"{k}={json.dumps(v)}")]
    base = [
        sys.executable,
        "-m",
        f"dsa_cast_train.{stage}",
        "--preset",
        "tiny",
        *args,
        *extra,
        "--run-dir",
        str(run_dir),
    ]
    port = _free_port()
    t0 = time.perf_counter()
    procs = []
    for i in range(processes):
        cmd = (
            base
            if processes == 1
            else [
                *base,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(processes),
                "--process-id",
                str(i),
            ]
        )
        log = open(run_dir.parent / f"{run_dir.name}.p{i}.out", "wb")  # noqa: SIM115 (closed below)
        procs.append(
            (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True), log)
        )
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end and any(p.poll() is None for p, _ in procs):
        time.sleep(0.2)
    for p, log in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
    return time.perf_counter() - t0, [p.returncode for p, _ in procs]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _median_after_first(values: list[float]) -> float | None:
    return round(statistics.median(values[1:]), 4) if len(values) > 1 else None


def _sft(run_dir: Path) -> dict:
    recs = _records(run_dir / "metrics.jsonl")
    train = [r for r in recs if r["split"] == "train"]
    logs = [run_dir / "run.log", *sorted(run_dir.glob("run.process-*.log"))]
    per_process = [re.findall(r"step \d+/\d+\s+loss ([\d.]+)", p.read_text()) for p in logs]
    return {
        "step_seconds_median": _median_after_first([r["seconds"] for r in train]),
        "step_seconds": [round(r["seconds"], 4) for r in train],
        "tokens_per_step": train[-1]["tokens"] if train else None,
        "train_losses": [round(r["loss"], 6) for r in train],
        "eval_losses": [round(r["loss"], 6) for r in recs if r["split"] == "eval"],
        "processes_logged_equal_losses": all(p == per_process[0] for p in per_process),
    }


def _grpo(run_dir: Path) -> dict:
    times = [r["time"] for r in _records(run_dir / "metrics.jsonl") if r.get("mode") == "train"]
    logs = [run_dir / "run.log", *sorted(run_dir.glob("run.process-*.log"))]
    losses = [re.findall(r"actor loss per update: (.+)", p.read_text()) for p in logs]
    intervals = [b - a for a, b in pairwise(times)]  # the first holds the update's compilation
    return {
        "step_seconds_median": _median_after_first(intervals),
        "step_seconds": [round(x, 4) for x in intervals],
        "actor_losses": [float(x) for x in losses[0][0].split()] if losses[0] else [],
        "processes_logged_equal_losses": all(x == losses[0] for x in losses),
    }


def _max_diff(a: list[float] | None, b: list[float] | None) -> float | None:
    if not a or not b or len(a) != len(b):
        return None
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sft-steps", type=int, default=12)
    ap.add_argument("--grpo-steps", type=int, default=6)
    ap.add_argument("--out", default=str(RESULTS / "bench_multihost.json"))
    args = ap.parse_args(argv)
    result: dict = {
        "settings": dict(SETTINGS),
        "sft_steps": args.sft_steps,
        "grpo_steps": args.grpo_steps,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_start": os.getloadavg()[0],
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_multihost-") as tmp:
        for processes in (1, 2):
            sft_dir, grpo_dir = Path(tmp) / f"sft-{processes}p", Path(tmp) / f"grpo-{processes}p"
            wall_sft, rc_sft = _launch(
                "sft",
                sft_dir,
                processes,
                ["--set", f"sft.max_steps={args.sft_steps}", "--set", f"sft.save_every_steps={args.sft_steps}"],
            )
            run = {"sft_wall_seconds": round(wall_sft, 1), "sft_exit": rc_sft}
            if rc_sft == [0] * processes:
                run["sft"] = _sft(sft_dir)
                wall, rc = _launch(
                    "grpo",
                    grpo_dir,
                    processes,
                    [
                        "--set",
                        f"grpo.max_steps={args.grpo_steps}",
                        "--set",
                        f"grpo.save_every_steps={args.grpo_steps}",
                        "--init-checkpoint",
                        str(sft_dir / "checkpoints"),
                    ],
                )
                run.update(grpo_wall_seconds=round(wall, 1), grpo_exit=rc)
                if rc == [0] * processes:
                    run["grpo"] = _grpo(grpo_dir)
            result["runs"][f"{processes}_process" + ("es" if processes > 1 else "")] = run
            print(f"{processes} process(es): {json.dumps(run)}", flush=True)
    one, two = result["runs"].get("1_process", {}), result["runs"].get("2_processes", {})
    result["max_abs_loss_difference"] = {  # float sums in another order: equal to about 1e-6
        "sft": _max_diff(one.get("sft", {}).get("train_losses"), two.get("sft", {}).get("train_losses")),
        "grpo": _max_diff(one.get("grpo", {}).get("actor_losses"), two.get("grpo", {}).get("actor_losses")),
    }
    result["machine"]["load_average_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"max |loss difference| one vs two processes: {result['max_abs_loss_difference']}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
