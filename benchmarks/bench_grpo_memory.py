"""GRPO memory and speed on the real Gemma 3 270M: Tunix's default loss against the lean loss.

Each measurement is a fresh subprocess running ``dsa_cast_train.grpo.run`` exactly as a user
would (the ``demo-cpu`` preset: float32, 192 prompt + ``--new-tokens`` new tokens, beta 0, one
prompt per step) with ``grpo.loss`` = ``tunix`` or ``lean`` and ``grpo.num_generations`` = G, for
``--steps`` steps. Reported per (loss, G):

- ``peak_rss_gib``: the child's peak resident set (``wait4`` rusage), model load and XLA
  compilation included; a child whose RSS passes ``--cap-gib`` is killed and reported as such;
- ``step_seconds``: median interval between successive reward batches after the first
  (compilation) step: one rollout + one actor update;
- ``generated_tokens_per_s``: completion tokens of those steps (re-tokenised from
  ``rollouts.jsonl``) per second of step time.

Targets (issue 9): the lean loss fits 8 generations within 12 GiB; at 2 generations it peaks at
least 4 GiB below the default and is no slower per step.

    python benchmarks/bench_grpo_memory.py                      # G = 2, 4, 8, 16; both losses
    python benchmarks/bench_grpo_memory.py --generations 2 8 --losses lean
    python benchmarks/bench_grpo_memory.py --quick              # G = 2, 2 steps, 64 new tokens

Results: ``benchmarks/results/bench_grpo_memory.json``. The trainers set two glibc malloc limits
(:mod:`dsa_cast_train.malloc`); ``--env DSA_CAST_MALLOC_TUNING=0`` measures glibc's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
GIB = 1024**3


def _child(args: argparse.Namespace) -> int:
    """Run GRPO once in this process (the measured subprocess)."""
    from dsa_cast_train import config as config_lib
    from dsa_cast_train import grpo, models

    overrides = [
        ("grpo.loss", args.loss),
        ("grpo.num_generations", args.g),
        ("grpo.max_steps", args.steps),
        ("grpo.max_new_tokens", args.new_tokens),
        ("grpo.save_every_steps", 10_000),
        ("grpo.eval_prompts", 0),
        ("grpo.beta", args.beta),
    ]
    if args.data_path:
        overrides.append(("data.path", args.data_path))
    cfg = config_lib.load_config(args.preset, overrides=overrides)
    run_dir = Path(args.run_dir)
    grpo.run(cfg, run_dir)
    # step times: one metrics record per reward batch, stamped when the batch was rewarded
    recs = grpo.read_metrics(run_dir / grpo.METRICS_FILE, "train")
    stamps = [float(r["time"]) for r in recs]
    lengths: dict[int, int] = {}
    tok = models.load_tokenizer(models.resolve_model_dir(cfg.model)[0] / "tokenizer.model")
    for line in (run_dir / grpo.ROLLOUTS_FILE).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        lengths[row["step"]] = lengths.get(row["step"], 0) + len(tok.EncodeAsIds(row["completion"]))
    out = {"stamps": stamps, "tokens_per_step": [lengths.get(int(r["step"]), 0) for r in recs]}
    Path(args.out).write_text(json.dumps(out), encoding="utf-8")
    return 0


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(
    loss: str,
    g: int,
    *,
    steps: int,
    new_tokens: int,
    cap_gib: float,
    preset: str,
    beta: float,
    data_path: str | None,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """One subprocess run of (loss, G); its peak RSS, step times and token rate."""
    with tempfile.TemporaryDirectory(prefix="bench-grpo-mem-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--loss",
            loss,
            "--g",
            str(g),
            "--steps",
            str(steps),
            "--new-tokens",
            str(new_tokens),
            "--preset",
            preset,
            "--beta",
            str(beta),
            "--run-dir",
            str(Path(tmp) / "run"),
            "--out",
            str(out),
        ]
        if data_path:
            cmd += ["--data-path", data_path]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
        t0 = time.time()
        log_path = Path(tmp) / "child.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            killed = False
            seen = 0
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                seen = max(seen, _rss_bytes(proc.pid))
                if seen > cap_gib * GIB and not killed:
                    proc.kill()
                    killed = True
                time.sleep(0.25)
        peak = max(seen, usage.ru_maxrss * 1024)
        res = {
            "loss": loss,
            "generations": g,
            "env": extra_env or {},
            "peak_rss_gib": round(peak / GIB, 2),
            "wall_seconds": round(time.time() - t0, 1),
            "exit": os.waitstatus_to_exitcode(status),
        }
        if killed:
            res.update(status=f"killed above the {cap_gib} GiB cap")
            return res
        if res["exit"] != 0 or not out.is_file():
            res.update(status="failed", log_tail=log_path.read_text(errors="replace")[-2000:])
            return res
        data = json.loads(out.read_text())
        stamps, toks = data["stamps"], data["tokens_per_step"]
        # interval i = stamps[i+1] - stamps[i]: the update of batch i + the rollout of batch i+1;
        # the first interval holds the update's compilation
        intervals = [b - a for a, b in pairwise(stamps)][1:]
        timed_tokens = sum(toks[2:])
        res.update(
            status="ok",
            steps=len(stamps),
            step_seconds=round(statistics.median(intervals), 1) if intervals else None,
            step_seconds_all=[round(x, 1) for x in intervals],
            generated_tokens_per_s=round(timed_tokens / sum(intervals), 1) if intervals else None,
            mean_completion_tokens=round(sum(toks) / max(1, len(toks)) / g, 1),
        )
        return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--losses", nargs="+", default=["tunix", "lean"], choices=["tunix", "lean"])
    p.add_argument("--generations", nargs="+", type=int, default=[2, 4, 8, 16])
    p.add_argument("--steps", type=int, default=4, help="GRPO steps per run (the first is compilation)")
    p.add_argument("--new-tokens", type=int, default=320)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--cap-gib", type=float, default=20.0, help="kill a run whose RSS passes this")
    p.add_argument("--preset", default="demo-cpu")
    p.add_argument("--data-path", default=None, help="GSM8K directory (default: the preset's / embedded)")
    p.add_argument(
        "--env",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the measured runs (e.g. MALLOC_ARENA_MAX=2)",
    )
    p.add_argument("--quick", action="store_true", help="G = 2, 3 steps, 64 new tokens, lean only")
    p.add_argument("--out", default=str(RESULTS / "bench_grpo_memory.json"))
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--loss", help=argparse.SUPPRESS)
    p.add_argument("--g", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    if args.quick:
        args.generations, args.steps, args.new_tokens, args.losses = [2], 3, 64, ["lean"]

    extra_env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--env {item!r}: expected KEY=VALUE")
        extra_env[key] = value
    results = []
    over_cap: set[str] = set()
    for g in args.generations:
        for loss in args.losses:
            if loss in over_cap:
                results.append({"loss": loss, "generations": g, "status": "skipped: a smaller G passed the cap"})
                print(f"{loss:6s} G={g:2d}  skipped (a smaller G passed the cap)", flush=True)
                continue
            r = measure(
                loss,
                g,
                steps=args.steps,
                new_tokens=args.new_tokens,
                cap_gib=args.cap_gib,
                preset=args.preset,
                beta=args.beta,
                data_path=args.data_path,
                extra_env=extra_env,
            )
            if r["status"].startswith("killed"):
                over_cap.add(loss)
            results.append(r)
            print(
                f"{loss:6s} G={g:2d}  peak {r['peak_rss_gib']:6.2f} GiB  step {r.get('step_seconds')} s  "
                f"{r.get('generated_tokens_per_s')} tok/s  [{r['status']}]",
                flush=True,
            )

    by = {(r["loss"], r["generations"]): r for r in results}
    checks = {}
    lean8 = by.get(("lean", 8))
    if lean8 and lean8["status"] == "ok":
        checks["lean_G8_within_12GiB"] = lean8["peak_rss_gib"] <= 12.0
    t2, l2 = by.get(("tunix", 2)), by.get(("lean", 2))
    if t2 and l2 and t2["status"] == l2["status"] == "ok":
        checks["lean_G2_saves_4GiB"] = t2["peak_rss_gib"] - l2["peak_rss_gib"] >= 4.0
        checks["lean_G2_not_slower"] = l2["step_seconds"] <= t2["step_seconds"]
    report = {
        "benchmark": "bench_grpo_memory",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "settings": {
            "env": extra_env,
            "preset": args.preset,
            "steps": args.steps,
            "new_tokens": args.new_tokens,
            "beta": args.beta,
            "cap_gib": args.cap_gib,
        },
        "results": results,
        "checks": checks,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(json.dumps(checks, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
