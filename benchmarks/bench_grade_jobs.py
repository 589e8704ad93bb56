"""Throughput of ``python -m dsa_cast grade --jobs N`` for 1, 2 and all cores.

Writes a JSONL file of generated DSA completions (1-1.5 KB each, a share wrong and a share
malformed, every record with its reference; nothing is read from outside the repository), then
times the CLI on it in a fresh process per run: ``--jobs 1`` (grading in the main process),
``--jobs 2`` and ``--jobs <all cores>``, ``--runs`` times each, and reports the median wall time,
records per second, the speed-up over ``--jobs 1``, and the peak RSS of the main process and of
the largest worker (sampled every 50 ms with psutil, from the ``[bench]`` extra). Also checks that
every run wrote the same ``results.jsonl``.

    python benchmarks/bench_grade_jobs.py              # 20,000 records, 3 runs per setting
    python benchmarks/bench_grade_jobs.py --quick      # 3,000 records, 1 run: a smoke test

Results: ``benchmarks/results/bench_grade_jobs.json`` (and printed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_grade_jobs.json"

# Run in a fresh interpreter: prints the exit status, the peak RSS (KiB) and the CPU seconds of
# the main process.
CHILD = """
import io, resource, sys
from dsa_cast.cli import main
rc = main(sys.argv[1:], stdout=io.StringIO())
r = resource.getrusage(resource.RUSAGE_SELF)
print(rc, r.ru_maxrss, r.ru_utime + r.ru_stime)
"""
POLL_S = 0.05


def completion(rng: random.Random) -> tuple[str, str]:
    """A DSA completion for a generated 3-4 step word problem, and its reference."""
    a, b, c = rng.randint(3, 90), rng.randint(2, 12), rng.randint(5, 400)
    total = a * b + c
    kind = rng.random()
    steps = [f"CALC: {a} * {b} = {a * b}", f"CALC: {a * b} + {c} = {total}"]
    if rng.random() < 0.5:
        steps.append(f"CALC: {total} - {c} = {a * b}")
    answer = total if kind > 0.2 else total + rng.randint(1, 9)
    text = (
        "<reasoning>\nPlan:\n1. Work out what the boxes hold.\n2. Add the loose items.\n"
        "3. Check the sum against the question.\n"
        f"Reasoning:\nThere are {a} boxes with {b} items in each, which makes {a} times {b} = {a * b} "
        f"items in the boxes. Another {c} items lie loose on the shelf, so together there are "
        f"{a * b} + {c} = {total} items. Every box was counted once and nothing was left out, "
        "so the count covers all of the items the question asks about.\n"
        "Evidence:\n" + "\n".join(steps) + "\n"
        f"Sanity_check:\nTaking the {c} loose items away from {total} leaves {a * b}, which is "
        f"{b} for each of the {a} boxes, so {total} is consistent with every number given.\n"
        f"</reasoning>\n<answer>{answer}</answer>"
    )
    if kind < 0.1:  # malformed: a section missing
        text = text.replace("Sanity_check:", "Check:")
    return text, f"{a} * {b} + {c} = <<{a}*{b}+{c}={total}>>{total}\n#### {total}"


def write_input(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            text, ref = completion(rng)
            fh.write(json.dumps({"id": i, "completion": text, "answer": ref}) + "\n")
    return path.stat().st_size


def _sample_workers(proc, cpu: dict[int, float]) -> int:
    """Largest RSS (bytes) among the descendants of ``proc`` (the forkserver and its workers);
    records each one's CPU seconds so far in ``cpu`` (by pid)."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return 0
    best = 0
    for k in kids:
        try:
            with k.oneshot():
                best = max(best, k.memory_info().rss)
                t = k.cpu_times()
                cpu[k.pid] = t.user + t.system
        except psutil.Error:
            pass
    return best


def run_once(src: Path, out: Path, jobs: int) -> dict:
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        "grade",
        str(src),
        "--out",
        str(out),
        "--no-plots",
        "--progress",
        "off",
        "--jobs",
        str(jobs),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    worker = 0
    cpu: dict[int, float] = {}
    while proc.poll() is None:  # sample the workers' memory and CPU time while they run
        worker = max(worker, _sample_workers(proc, cpu))
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"grade --jobs {jobs} failed:\n{stderr[-2000:]}")
    rc, rss_self, cpu_self = stdout.split()[-3:]
    digest = hashlib.sha256((out / "results.jsonl").read_bytes()).hexdigest()
    return {
        "wall_s": wall,
        "rc": int(rc),
        "rss_main_mib": int(rss_self) / 1024,
        "rss_worker_mib": worker / 2**20,
        "cpu_main_s": float(cpu_self),
        "cpu_workers_s": sum(cpu.values()),
        "results_sha256": digest,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="3,000 records, 1 run")
    p.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    a = p.parse_args(argv)
    if a.quick:
        a.records, a.runs = 3_000, 1
    sys.path.insert(0, str(ROOT))
    from dsa_cast.parallel import available_cores

    cores = available_cores()
    settings = sorted({1, 2, cores})
    load0 = [round(x, 2) for x in os.getloadavg()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "outputs.jsonl"
        size = write_input(src, a.records)
        digests = set()
        for jobs in settings:
            runs = [run_once(src, Path(tmp) / f"out-{jobs}-{r}", jobs) for r in range(a.runs)]
            digests.update(r["results_sha256"] for r in runs)
            wall = statistics.median(r["wall_s"] for r in runs)
            rows.append(
                {
                    "jobs": jobs,
                    "label": "all cores" if jobs == cores else f"{jobs}",
                    "median_wall_s": round(wall, 3),
                    "records_per_s": round(a.records / wall),
                    "walls_s": [round(r["wall_s"], 3) for r in runs],
                    "cpu_main_s": round(statistics.median(r["cpu_main_s"] for r in runs), 2),
                    "cpu_workers_s": round(statistics.median(r["cpu_workers_s"] for r in runs), 2),
                    "rss_main_mib": round(max(r["rss_main_mib"] for r in runs), 1),
                    "rss_worker_mib": round(max(r["rss_worker_mib"] for r in runs), 1),
                }
            )
    base = rows[0]["median_wall_s"]
    for r in rows:
        r["speedup"] = round(base / r["median_wall_s"], 2)
    # CPU accounting, independent of other load on the machine. On N idle cores the run takes at
    # least max(main CPU, (main + workers) CPU / N): the main process is serial, and all of it
    # shares N cores. That bounds the speed-up over --jobs 1 (derived, not measured).
    one = rows[0]["cpu_main_s"]
    for r in rows:
        if r["jobs"] > 1:
            main_s, work_s = r["cpu_main_s"], r["cpu_workers_s"]
            r["main_cpu_share"] = round(main_s / one, 3)
            r["worker_cpu_ratio"] = round(work_s / one, 3)
            r["speedup_bound_idle_cores"] = {
                str(n): round(one / max(main_s, (main_s + work_s) / n), 2) for n in (r["jobs"], 4, 8, 16)
            }
    result = {
        "benchmark": "python -m dsa_cast grade --jobs N (fresh process per run, wall time incl. start-up)",
        "records": a.records,
        "input_mib": round(size / 2**20, 2),
        "runs": a.runs,
        "cores": cores,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "load_average_at_start": load0,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "identical_results": len(digests) == 1,
        "rows": rows,
    }
    print(f"{a.records} records ({result['input_mib']} MiB), {cores} cores, median of {a.runs} run(s)")
    print(f"load average {load0} at start, {result['load_average_at_end']} at end")
    print(
        f"{'jobs':>10} {'wall s':>8} {'rec/s':>8} {'speedup':>8} {'main cpu s':>11} {'workers cpu s':>14} "
        f"{'main MiB':>9} {'worker MiB':>11}"
    )
    for r in rows:
        print(
            f"{r['label']:>10} {r['median_wall_s']:>8.2f} {r['records_per_s']:>8} {r['speedup']:>8.2f} "
            f"{r['cpu_main_s']:>11.2f} {r['cpu_workers_s']:>14.2f} {r['rss_main_mib']:>9.1f} "
            f"{r['rss_worker_mib']:>11.1f}"
        )
    for r in rows[1:]:
        bounds = ", ".join(f"{n} cores {b}x" for n, b in r["speedup_bound_idle_cores"].items())
        print(
            f"--jobs {r['jobs']}: main process {100 * r['main_cpu_share']:.0f}% of --jobs 1's CPU, workers "
            f"{100 * r['worker_cpu_ratio']:.0f}%; speed-up bound on idle cores (derived): {bounds}"
        )
    print(f"identical results.jsonl in every run: {result['identical_results']}")
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = RESULTS.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_out, RESULTS)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0 if result["identical_results"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
