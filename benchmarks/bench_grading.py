"""Side-by-side grading benchmark: dsa_cast vs the notebook's scorers vs math-verify.

One run, one corpus (``benchmarks/corpus.py``: labelled DSA completions built from GSM8K test,
plus the 200 KB adversarial set), these scorers:

* ``dsa_cast``: ``grade(completion, reference, question=...)``, the full default rubric;
* ``dsa_cast_format``: the format-only rubric (``rubric="format"``);
* ``dsa_cast_seed``: the core's linear-time reproduction of the notebook (``rubric="seed"``);
* ``seed_anchor``: ``benchmarks/seed_anchor.py``, the notebook's regex scorers (with the safe
  evaluator in place of sympify); ``seed_anchor_regex``: its regex work alone (no CALC check);
* ``math_verify``: HuggingFace math-verify ``verify(parse(gold), parse(completion))``, when installed.

Reported: completions/s (median of ``--runs`` timed passes), the ratio of ``dsa_cast`` to each
other scorer, peak traced memory of one pass, agreement of ``correct`` with the corpus labels
(overall and per kind), and the time of every adversarial case per scorer, each case run in
a worker process under a time cap so a blow-up cannot hang the run. When ``dsa_cast`` misses
its throughput target, a function-level profile says where the time goes. Results go to
``benchmarks/results/bench_grading.{json,md}``.

    python benchmarks/bench_grading.py            # full run (a few minutes)
    python benchmarks/bench_grading.py --quick    # small corpus, 3 runs: a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import multiprocessing
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from corpus import Case, CorpusConfig, Item, build_adversarial, build_corpus  # noqa: E402

RESULTS = HERE / "results"


@dataclass(frozen=True)
class BenchConfig:
    """Targets and limits of the benchmark (the issue's numbers).

    Attributes:
      runs: timed passes over the corpus per scorer (the median is reported).
      target_rate: completions/s that full ``dsa_cast`` grading must reach.
      target_adversarial_s: every adversarial case must grade within this many seconds.
      cap_s: per-case wall-clock cap in the worker; a case still running is reported "> cap".
      adversarial_repeats: timed repeats per adversarial case: the best CPU time is reported
        (the least disturbed by other processes; the median wall time is kept in the JSON).
      memory_items: corpus items in the traced-memory pass (tracing is slow).
      profile_items: corpus items in the profile taken when the target is missed.
      profile_rows: functions listed in that profile.
      case_profile_rows: functions listed per adversarial case over the time target.
    """

    runs: int = 5
    target_rate: float = 50_000.0
    target_adversarial_s: float = 0.010
    cap_s: float = 2.0
    adversarial_repeats: int = 3
    memory_items: int = 1000
    profile_items: int = 2000
    profile_rows: int = 25
    case_profile_rows: int = 6


# --------------------------------------------------------------------------------------
# Scorers: (item-like) -> correct flag. Each does its complete per-item work.
# --------------------------------------------------------------------------------------

Scorer = Callable[[str, str, str], "bool | None"]


def _dsa_cast(rubric: str) -> Scorer:
    from dsa_cast.score import grade

    def score(completion: str, reference: str, question: str) -> bool | None:
        return grade(completion, reference, rubric=rubric, question=question or None).correct

    return score


def _seed_anchor() -> Scorer:
    from seed_anchor import SEED, math_accuracy, seed_score

    def score(completion: str, reference: str, question: str) -> bool:
        seed_score(completion, reference)  # the full summed reward, as the notebook computed it
        return math_accuracy(completion, reference, SEED) == 1.0

    return score


def _seed_anchor_regex() -> Scorer:
    """The notebook's regex work alone (both format rewards and the answer check, no CALC
    evaluation): comparable with the "notebook-style regex scorers" figure of the issue."""
    from seed_anchor import SEED, format_exact_score, format_soft_score, math_accuracy

    def score(completion: str, reference: str, question: str) -> bool:
        format_exact_score(completion, SEED)
        format_soft_score(completion, SEED)
        return math_accuracy(completion, reference, SEED) == 1.0

    return score


def _math_verify() -> Scorer | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None

    def score(completion: str, reference: str, question: str) -> bool:
        gold = parse(reference.split("####")[-1].strip())
        return bool(verify(gold, parse(completion)))

    return score


def scorers() -> dict[str, Scorer]:
    out: dict[str, Scorer] = {
        "dsa_cast": _dsa_cast("dsa-cast"),
        "dsa_cast_format": _dsa_cast("format"),
        "dsa_cast_seed": _dsa_cast("seed"),
        "seed_anchor": _seed_anchor(),
        "seed_anchor_regex": _seed_anchor_regex(),
    }
    mv = _math_verify()
    if mv is not None:
        out["math_verify"] = mv
    return out


# --------------------------------------------------------------------------------------
# Throughput, memory, agreement.
# --------------------------------------------------------------------------------------


def _timed_pass(fn: Scorer, items: list[Item]) -> tuple[float, float, list]:
    """Wall and CPU seconds of one pass, and the flags. CPU time leaves out the time other
    processes held the CPU, so it is the steadier figure on a shared machine."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    flags = [fn(it.completion, it.reference, it.question) for it in items]
    return time.perf_counter() - t0, time.process_time() - c0, flags


def throughput(name: str, fn: Scorer, items: list[Item], runs: int) -> dict:
    times, cpu, flags = [], [], None
    for _ in range(runs):
        dt, dc, got = _timed_pass(fn, items)
        times.append(dt)
        cpu.append(dc)
        flags = flags or got
    med = statistics.median(times)
    agreement = None
    by_kind: dict[str, list[int]] = {}
    if name != "dsa_cast_format":  # the format rubric does not judge correctness
        hits = [f == it.expected_correct for f, it in zip(flags, items, strict=True)]
        agreement = sum(hits) / len(hits)
        for h, it in zip(hits, items, strict=True):
            k = by_kind.setdefault(it.kind, [0, 0])
            k[0] += h
            k[1] += 1
    return {
        "rate": len(items) / med,
        "rate_cpu": len(items) / statistics.median(cpu),
        "median_s": med,
        "runs_s": times,
        "runs_cpu_s": cpu,
        "agreement": agreement,
        "agreement_by_kind": {k: v[0] / v[1] for k, v in sorted(by_kind.items())},
        "disagreements": [
            it.id for f, it in zip(flags, items, strict=True) if name != "dsa_cast_format" and f != it.expected_correct
        ][:20],
    }


def peak_memory(fn: Scorer, items: list[Item]) -> int:
    fn(items[0].completion, items[0].reference, items[0].question)  # lazy imports/compiles first
    gc.collect()
    tracemalloc.start()
    try:
        for it in items:
            fn(it.completion, it.reference, it.question)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def stages(items: list[Item], runs: int) -> dict[str, float]:
    """CPU microseconds per completion of each public building block full grading uses, each
    timed alone without a profiler (median of ``runs``). Not additive: the rubric calls
    ``numbers_in`` only when its plain-number check misses."""
    from dsa_cast.claims import check_claims
    from dsa_cast.numbers import extract_answer, extract_reference, numbers_in
    from dsa_cast.parse import parse
    from dsa_cast.score import grade

    parsed = [parse(it.completion) for it in items]
    evidence = [(c.section("Evidence").body if c.section("Evidence") else "") for c in parsed]
    answers = [c.answer.body if c.answer else "" for c in parsed]
    mentions = ["\n".join(s.body for s in c.sections if s.name in ("Reasoning", "Sanity_check")) for c in parsed]
    jobs: dict[str, Callable[[], object]] = {
        "grade (full)": lambda: [grade(it.completion, it.reference, question=it.question) for it in items],
        "parse": lambda: [parse(it.completion) for it in items],
        "extract_reference": lambda: [extract_reference(it.reference) for it in items],
        "extract_answer": lambda: [extract_answer(a) for a in answers],
        "check_claims (Evidence)": lambda: [check_claims(e) for e in evidence if e],
        "numbers_in over Reasoning + Sanity_check (standalone)": lambda: [list(numbers_in(m)) for m in mentions],
    }
    out = {}
    for name, job in jobs.items():
        times = []
        for _ in range(runs):
            gc.collect()
            c0 = time.process_time()
            job()
            times.append(time.process_time() - c0)
        out[name] = 1e6 * statistics.median(times) / len(items)
    return out


def _profiled(items: list[Item]) -> pstats.Stats:
    from dsa_cast.score import grade

    prof = cProfile.Profile()
    prof.enable()
    for it in items:
        grade(it.completion, it.reference, question=it.question or None)
    prof.disable()
    return pstats.Stats(prof)


def profile_case(case: Case, rows: int) -> list[dict]:
    """Top functions (own time) of full dsa_cast grading on one adversarial case."""
    stats = _profiled([Item(case.name, case.completion, case.reference, "", False, "adversarial", "")])
    table = [
        {"function": f"{Path(file).name}:{line}({func})", "calls": nc, "own_ms": 1e3 * tt, "cum_ms": 1e3 * ct}
        for (file, line, func), (cc, nc, tt, ct, _) in stats.stats.items()
    ]  # type: ignore[attr-defined]
    return sorted(table, key=lambda r: -r["own_ms"])[:rows]


def profile(items: list[Item], rows: int) -> dict:
    """Function-level profile of full dsa_cast grading: top functions by own and total time."""
    stats = _profiled(items)
    total = stats.total_tt
    table = []
    for (file, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        table.append(
            {
                "function": f"{Path(file).name}:{line}({func})",
                "calls": nc,
                "own_s": tt,
                "cum_s": ct,
                "own_share": tt / total if total else 0.0,
                "us_per_completion_own": 1e6 * tt / len(items),
            }
        )
    by_own = sorted(table, key=lambda r: -r["own_s"])[:rows]
    by_cum = sorted(
        (
            r
            for r in table
            if "dsa_cast" in r["function"]
            or r["function"].startswith(("rubrics", "parse", "claims", "numbers", "score", "schema"))
        ),
        key=lambda r: -r["cum_s"],
    )[:rows]
    return {
        "items": len(items),
        "profiled_s": total,
        "us_per_completion": 1e6 * total / len(items),
        "top_own": by_own,
        "top_cumulative": by_cum,
    }


# --------------------------------------------------------------------------------------
# Adversarial cases, each in a worker process under a cap.
# --------------------------------------------------------------------------------------


def _worker(conn, size: int, repeats: int) -> None:  # runs in a spawned process
    sys.path.insert(0, str(HERE))
    cases = build_adversarial(size)
    table = scorers()
    warm = build_corpus(CorpusConfig(limit=1, per_question=1))[0]
    for fn in table.values():
        fn(warm.completion, warm.reference, warm.question)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        name, index = job
        case = cases[index]
        fn = table[name]
        wall, cpu = [], []
        try:
            for _ in range(repeats):
                c0, t0 = time.process_time(), time.perf_counter()
                fn(case.completion, case.reference, "")
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                if wall[-1] > 0.5:  # slow: one measurement is enough
                    break
            conn.send(("ok", {"seconds": min(cpu), "wall_median": statistics.median(wall)}))
        except Exception as err:  # a scorer may raise on degenerate text: report, don't die
            conn.send(("error", f"{type(err).__name__}: {err}"[:200]))


class _Worker:
    def __init__(self, ctx, size: int, repeats: int) -> None:
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, size, repeats), daemon=True)
        self.proc.start()
        if not self.parent.poll(300) or self.parent.recv() != "ready":
            raise RuntimeError("benchmark worker failed to start")

    def run(self, name: str, index: int, cap: float) -> tuple[str, float | str]:
        self.parent.send((name, index))
        if self.parent.poll(cap):
            return self.parent.recv()
        self.kill()
        return "cap", cap

    def kill(self) -> None:
        self.proc.terminate()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.parent.send(None)
        self.proc.join(10)
        if self.proc.is_alive():
            self.kill()


def adversarial(names: list[str], cases: list[Case], size: int, cfg: BenchConfig) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out: dict[str, dict] = {n: {} for n in names}
    worker = _Worker(ctx, size, cfg.adversarial_repeats)
    try:
        for i, case in enumerate(cases):
            for name in names:
                status, value = worker.run(name, i, cfg.cap_s)
                if status == "cap":
                    out[name][case.name] = {"status": "cap", "seconds": None}
                    worker = _Worker(ctx, size, cfg.adversarial_repeats)
                elif status == "error":
                    out[name][case.name] = {"status": "error", "seconds": None, "error": value}
                else:
                    out[name][case.name] = {"status": "ok", **value}
    finally:
        worker.close()
    return out


def _worst(per_case: dict) -> tuple[str, str]:
    capped = [c for c, r in per_case.items() if r["status"] == "cap"]
    if capped:
        return capped[0], "cap"
    timed = {c: r["seconds"] for c, r in per_case.items() if r["seconds"] is not None}
    if not timed:
        return "-", "error"
    case = max(timed, key=timed.get)
    return case, timed[case]


# --------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------


def _ms(x) -> str:
    return "-" if x is None else f"{1e3 * x:.2f} ms"


def markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        "# Grading benchmark",
        "",
        f"Commit {res['machine']['commit']}. Machine: {res['machine']['cpu']} ({res['machine']['cpus']} CPUs visible), "
        f"Python {res['machine']['python']}, load average {res['machine']['load_average_at_start']} at "
        f"start and {res['machine']['load_average_at_end']} at end (other jobs shared the CPUs); "
        f"{res['corpus']['n']} completions "
        f"({res['corpus']['chars_min']}-{res['corpus']['chars_max']} chars, median "
        f"{res['corpus']['chars_median']}); median of {cfg['runs']} runs; the ratio column uses "
        "wall-clock rates of the same run.",
        "",
        "| scorer | completions/s (wall) | completions/s (CPU) | dsa_cast is x faster | peak memory | "
        "agreement with labels | worst adversarial, CPU (case) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    base = res["throughput"]["dsa_cast"]["rate"]
    for name, t in res["throughput"].items():
        worst_case, worst = res["adversarial_worst"][name]
        worst_s = f"> {cfg['cap_s']:g} s cap" if worst == "cap" else (worst if isinstance(worst, str) else _ms(worst))
        agree = "n/a (no correctness)" if t["agreement"] is None else f"{100 * t['agreement']:.2f}%"
        ratio = "1" if name == "dsa_cast" else f"{base / t['rate']:.2f}"
        lines.append(
            f"| {name} | {t['rate']:,.0f} | {t['rate_cpu']:,.0f} | {ratio} | "
            f"{res['peak_memory'][name] / 1024:,.0f} KiB | "
            f"{agree} | {worst_s} ({worst_case}) |"
        )
    lines += [
        "",
        f"Targets: dsa_cast >= {cfg['target_rate']:,.0f} completions/s: "
        f"**{'met' if res['targets']['rate_met'] else 'missed'}**; every adversarial case "
        f"< {1e3 * cfg['target_adversarial_s']:g} ms: "
        f"**{'met' if res['targets']['adversarial_met'] else 'missed'}**; agreement 100%: "
        f"**{'met' if res['targets']['agreement_met'] else 'missed'}**.",
        "",
    ]
    kinds = sorted({k for t in res["throughput"].values() for k in t["agreement_by_kind"]})
    judged = [n for n, t in res["throughput"].items() if t["agreement"] is not None]
    lines += [
        "## Agreement with the labels, by kind",
        "",
        "| kind | " + " | ".join(judged) + " |",
        "|---|" + "---:|" * len(judged),
    ]
    for k in kinds:
        lines.append(
            f"| {k} | "
            + " | ".join(f"{100 * res['throughput'][n]['agreement_by_kind'].get(k, 0):.1f}%" for n in judged)
            + " |"
        )
    names = list(res["adversarial"])
    lines += [
        "",
        f"## Adversarial cases (~{res['adversarial_size'] // 1000} KB each; best CPU time of up to "
        f"{cfg['adversarial_repeats']} runs; wall-clock cap {cfg['cap_s']:g} s)",
        "",
        "| case | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for case in res["adversarial"][names[0]]:
        cells = []
        for n in names:
            r = res["adversarial"][n][case]
            cells.append(
                f"> {cfg['cap_s']:g} s"
                if r["status"] == "cap"
                else ("error" if r["status"] == "error" else _ms(r["seconds"]))
            )
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    if res.get("stages_us"):
        budget = 1e6 / cfg["target_rate"]
        lines += [
            "",
            f"## Where dsa_cast's time goes: building blocks (CPU us per completion; the "
            f"target allows {budget:.0f} us in all; each block timed alone, not additive)",
            "",
            "| stage | us / completion |",
            "|---|---:|",
        ]
        for name, us in res["stages_us"].items():
            lines.append(f"| {name} | {us:.1f} |")
    if res.get("profile"):
        p = res["profile"]
        lines += [
            "",
            f"## Where dsa_cast's time goes ({p['items']} completions under cProfile, "
            f"{p['us_per_completion']:.0f} us each when profiled)",
            "",
            "| function | calls | own time | own share | cumulative |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in p["top_own"]:
            lines.append(
                f"| `{r['function']}` | {r['calls']:,} | {r['own_s']:.3f} s | "
                f"{100 * r['own_share']:.1f}% | {r['cum_s']:.3f} s |"
            )
        lines += [
            "",
            "Cumulative time of dsa_cast functions:",
            "",
            "| function | calls | cumulative | own |",
            "|---|---:|---:|---:|",
        ]
        for r in p["top_cumulative"]:
            lines.append(f"| `{r['function']}` | {r['calls']:,} | {r['cum_s']:.3f} s | {r['own_s']:.3f} s |")
    if res.get("adversarial_profiles"):
        lines += ["", "## dsa_cast on the adversarial cases over the time target (cProfile, own time)", ""]
        for case, rows in res["adversarial_profiles"].items():
            top = "; ".join(f"`{r['function']}` {r['own_ms']:.1f} ms ({r['calls']:,} calls)" for r in rows)
            lines.append(f"- **{case}**: {top}")
    return "\n".join(lines) + "\n"


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": _load(),
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit (and whether it had local changes), to tie figures to code."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "dsa_cast", "benchmarks"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+local changes" if dirty else "")


def _load() -> list[float] | None:
    """1/5/15-minute load averages: other work on the machine slows every figure."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=BenchConfig.runs)
    p.add_argument("--per-question", type=int, default=CorpusConfig.per_question)
    p.add_argument("--limit", type=int, default=None, help="GSM8K items used (default: all)")
    p.add_argument("--cap", type=float, default=BenchConfig.cap_s, help="adversarial per-case cap (s)")
    p.add_argument("--size", type=int, default=200_000, help="adversarial case size (chars)")
    p.add_argument("--quick", action="store_true", help="100 GSM8K items, 3 runs")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.quick:
        a.limit, a.runs = a.limit or 100, min(a.runs, 3)
    cfg = BenchConfig(runs=a.runs, cap_s=a.cap)
    items = build_corpus(CorpusConfig(per_question=a.per_question, limit=a.limit))
    cases = build_adversarial(a.size)
    sizes = sorted(len(it.completion) for it in items)
    table = scorers()
    res: dict = {
        "config": asdict(cfg),
        "machine": _machine(),
        "corpus": {
            "n": len(items),
            "chars_min": sizes[0],
            "chars_max": sizes[-1],
            "chars_median": sizes[len(sizes) // 2],
            "kinds": dict(Counter(it.kind.split(":")[0] for it in items)),
            "expected_correct": sum(it.expected_correct for it in items),
        },
        "adversarial_size": a.size,
        "throughput": {},
        "peak_memory": {},
    }
    for name, fn in table.items():
        fn(items[0].completion, items[0].reference, items[0].question)  # warm up
        res["throughput"][name] = t = throughput(name, fn, items, cfg.runs)
        res["peak_memory"][name] = peak_memory(fn, items[: cfg.memory_items])
        agree = "-" if t["agreement"] is None else f"{100 * t['agreement']:.2f}%"
        print(f"{name:16s} {t['rate']:>12,.0f} completions/s   agreement {agree}", flush=True)
    res["ratios"] = {
        n: res["throughput"]["dsa_cast"]["rate"] / t["rate"] for n, t in res["throughput"].items() if n != "dsa_cast"
    }
    print(f"adversarial: {len(cases)} cases x {len(table)} scorers, cap {cfg.cap_s:g} s", flush=True)
    res["adversarial"] = adversarial(list(table), cases, a.size, cfg)
    res["adversarial_worst"] = {n: _worst(per) for n, per in res["adversarial"].items()}
    dsa = res["adversarial"]["dsa_cast"]
    res["targets"] = {
        "rate_met": res["throughput"]["dsa_cast"]["rate"] >= cfg.target_rate,
        "adversarial_met": all(r["status"] == "ok" and r["seconds"] < cfg.target_adversarial_s for r in dsa.values()),
        "adversarial_over_target": {
            c: r["seconds"] for c, r in dsa.items() if r["status"] != "ok" or r["seconds"] >= cfg.target_adversarial_s
        },
        "agreement_met": res["throughput"]["dsa_cast"]["agreement"] == 1.0,
    }
    if not res["targets"]["rate_met"]:
        res["stages_us"] = stages(items, cfg.runs)
        res["profile"] = profile(items[: cfg.profile_items], cfg.profile_rows)
    by_name = {c.name: c for c in cases}
    res["adversarial_profiles"] = {
        name: profile_case(by_name[name], cfg.case_profile_rows)
        for name, r in dsa.items()
        if r["status"] == "ok" and r["seconds"] >= cfg.target_adversarial_s
    }
    res["machine"]["load_average_at_end"] = _load()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_grading.json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    md = markdown(res)
    (a.out / "bench_grading.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
