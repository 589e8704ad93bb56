"""Evaluation: greedy and majority-vote@k sampling with the Tunix sampler, graded by ``dsa_cast``.

``python -m dsa_cast_train.evaluate --preset tiny --run-dir runs/eval --checkpoint runs/sft/checkpoints
--compare base`` or ``run(config, run_dir)``.

Per model (the model source's weights, or a checkpoint restored into them) and per test item:

- greedy pass: one completion, graded (strict accuracy, approximate accuracy within
  ``eval.approx_tolerance``, exact format, each rubric component, Evidence claim verdicts);
- vote pass: ``eval.vote_k`` samples (temperature/top-k/top-p), each graded; the most common
  normalised answer (``Grade.predicted``, i.e. ``dsa_cast.numbers.format_value`` of the
  extracted answer; answerless samples abstain; ties go to the answer seen first) is the
  vote, scored strictly and approximately.

Outputs in the run directory: ``items.jsonl`` (prompt, completions, grades per item and
model), ``summary.json``, ``summary.md`` (models side by side, with the difference when
there are two) and ``summary.png``. Every metric carries its 95 % percentile-bootstrap interval
over items (:mod:`dsa_cast_train.stats`); two models evaluated together get the paired
difference, items matched by id, with its interval.

``python -m dsa_cast_train.evaluate --regrade FILE [FILE ...]`` recomputes all of that from
saved per-item files (``items.jsonl``, or the ``eval_*_items.jsonl`` kept under
``docs/results/``): each greedy completion is graded again with ``dsa_cast.score.grade``, and
each file after the first is compared with the one before it (:func:`regrade`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from dsa_cast import io, numbers, parse, rubrics, score
from dsa_cast.schema import DSA
from dsa_cast_train import cli, distributed, models, progress, runs, stats
from dsa_cast_train import config as config_lib
from dsa_cast_train.data.dsa_format import PREFILL
from dsa_cast_train.data.jsonl import read_jsonl
from dsa_cast_train.examples import data_source, load_examples, system_prompt
from dsa_cast_train.models import split_checkpoint_path

log = logging.getLogger("dsa_cast_train.evaluate")

ITEMS_FILE = "items.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
SUMMARY_PNG = "summary.png"
BASE = "base"
"""``eval.compare`` value meaning the model source's own weights."""

HEADLINE = ("strict_accuracy", "approx_accuracy", "format_adherence", "evidence_validity", "coherence",
            "vote_strict_accuracy", "vote_approx_accuracy", "mean_total_fraction")
"""Metrics drawn in the chart (all within [0, 1])."""


@dataclass(frozen=True)
class EvalResult:
    """Summaries per evaluated model plus the report files."""

    run_dir: str
    labels: tuple[str, ...]
    summaries: tuple[dict[str, Any], ...]
    """One metrics dict per model, in ``labels`` order (as in ``summary.json``)."""
    items_file: str
    summary_json: str
    summary_md: str
    summary_png: str
    seconds: float


# ----------------------------------------------------------------------------------------
# generation


def make_sampler(loaded: Any, cache_size: int):
    """A Tunix ``Sampler`` over ``loaded.model`` with a KV cache of ``cache_size`` tokens; it runs
    :func:`dsa_cast_train.sampling_model.sampling_view` of the model (last-token prefill logits,
    no remat: same parameters, same tokens)."""
    from tunix.generate import sampler as sampler_lib

    from dsa_cast_train import sampling_model

    cfg = loaded.model_config
    cache = sampler_lib.CacheConfig(cache_size=cache_size, num_layers=cfg.num_layers,
                                    num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
    return sampler_lib.Sampler(sampling_model.sampling_view(loaded.model), loaded.tokenizer, cache)


def prompt_budget(tokenizer: Any, prompts: Sequence[str], configured: int) -> int:
    """Prompt length the sampler pads to: ``configured``, or the longest prompt (+BOS) if longer.

    Tunix does not cut long prompts; it would round them up to a power of two and overflow
    the cache, so the budget grows to fit instead (with a warning).
    """
    longest = max((len(tokenizer.EncodeAsIds(p)) + 1 for p in prompts), default=1)
    if longest > configured:
        log.warning("longest prompt has %d tokens > eval.max_prompt_length %d; using %d",
                    longest, configured, longest)
    return max(configured, longest)


def generate(loaded: Any, prompts: Sequence[str], *, max_new_tokens: int, max_prompt_length: int,
             batch_size: int, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, seed: int = 0, sampler: Any = None,
             on_batch: Callable[[int], None] | None = None) -> list[str]:
    """Completions (text after the prompt, stopped at EOS / ``<end_of_turn>``) for ``prompts``.

    ``temperature == 0`` decodes greedily; otherwise top-p/top-k sampling seeded per batch
    (``seed + batch index``). The last batch is padded by repeating its last prompt so that
    every call has the same shape (one compilation). ``on_batch(n)`` is called after each
    batch with the number of prompts it completed (progress display).
    """
    if not prompts:
        return []
    budget = prompt_budget(loaded.tokenizer, prompts, max_prompt_length)
    sampler = sampler or make_sampler(loaded, budget + max_new_tokens)
    sampling = temperature > 0
    out: list[str] = []
    for b, start in enumerate(range(0, len(prompts), batch_size)):
        chunk = list(prompts[start:start + batch_size])
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        kwargs: dict[str, Any] = {}
        if sampling:
            kwargs = {"temperature": temperature, "top_p": 1.0 if top_p is None else top_p,
                      "top_k": top_k, "seed": int(seed + b)}
        result = sampler(padded, max_generation_steps=max_new_tokens, max_prompt_length=budget,
                         eos_tokens=list(loaded.eos_ids), echo=False, **kwargs)
        out.extend(result.text[:len(chunk)])
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def completion_for_grading(text: str, prefill: bool) -> str:
    """The model's full answer: the pre-filled ``<reasoning>\\n`` (:data:`dsa_cast_train.data.PREFILL`)
    belongs to it."""
    return PREFILL + text if prefill else text


# ----------------------------------------------------------------------------------------
# grading and metrics


def _fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    return numbers.parse_number(text)


def approx_correct(predicted: str | None, reference: Fraction | None, tolerance: float) -> bool:
    """``|pred - ref| <= tolerance x |ref|`` on exact values (``False`` without either)."""
    pred = _fraction(predicted)
    if pred is None or reference is None:
        return False
    return abs(pred - reference) <= Fraction(tolerance).limit_denominator(10**6) * abs(reference)


def grade_completion(completion: str, answer: str, question: str, *, rubric: str,
                     tolerance: float, reference: Fraction | None) -> dict[str, Any]:
    """One completion's grade plus exact-format, approximate and Evidence-claim facts."""
    grade = score.grade(completion, answer, rubric=rubric, question=question, detail=True)
    detail = grade.detail
    verdicts = detail.verdicts if detail is not None else ()
    parsed = detail.parsed if detail is not None else None
    if parsed is None:
        parsed = parse.parse(completion)
    checked = [v for v in verdicts if v.ok is not None]
    scores = detail.scores if detail is not None else {}
    coherence = scores.get("coherence") if "coherence" in grade.components else None
    return {
        "completion": completion,
        "total": float(grade.total),
        "max_total": float(grade.max_total),
        "components": {k: float(v) for k, v in grade.components.items()},
        "correct": bool(grade.correct),
        "approx_correct": bool(grade.correct) or approx_correct(grade.predicted, reference, tolerance),
        "predicted": grade.predicted,
        "exact_format": bool(parsed.exact_format),
        "claims_checked": len(checked),
        "claims_true": sum(1 for v in checked if v.ok),
        "sections_present": list(dict.fromkeys(s.name for s in parsed.sections)),
        "answer_block": parsed.answer is not None and parsed.answer.closed,
        "coherence": None if coherence is None else float(coherence),
        "issues": list(grade.issues),
    }


def majority_vote(graded: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The most common ``predicted`` answer among samples (None abstains; ties: first seen).

    Correctness of the vote is that of the first sample giving the winning answer, so the
    vote is judged exactly as the grader judged that answer.
    """
    answers = [g["predicted"] for g in graded if g["predicted"] is not None]
    if not answers:
        return {"answer": None, "count": 0, "correct": False, "approx_correct": False,
                "any_correct": any(g["correct"] for g in graded)}
    winner, count = Counter(answers).most_common(1)[0]
    first = next(g for g in graded if g["predicted"] == winner)
    return {"answer": winner, "count": count, "correct": first["correct"],
            "approx_correct": first["approx_correct"], "any_correct": any(g["correct"] for g in graded)}


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def section_presence(graded: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of completions holding each DSA section (in schema order) and a closed answer block."""
    out = {name: _mean([float(name in g.get("sections_present", ())) for g in graded])
           for name in DSA.sections}
    out["answer_block"] = _mean([float(bool(g.get("answer_block"))) for g in graded])
    return out


def pass_metrics(graded: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over graded completions (strict/approx accuracy, format, section presence,
    coherence, totals, components, claims)."""
    n = len(graded)
    coherent = [g["coherence"] for g in graded if g.get("coherence") is not None]
    components = sorted({k for g in graded for k in g["components"]})
    checked = sum(g["claims_checked"] for g in graded)
    true = sum(g["claims_true"] for g in graded)
    max_total = graded[0]["max_total"] if graded else 0.0
    mean_total = _mean([g["total"] for g in graded])
    return {
        "completions": n,
        "strict_accuracy": _mean([float(g["correct"]) for g in graded]),
        "approx_accuracy": _mean([float(g["approx_correct"]) for g in graded]),
        "format_adherence": _mean([float(g["exact_format"]) for g in graded]),
        "section_presence": section_presence(graded),
        "coherence": _mean(coherent) if coherent else None,
        "mean_total": mean_total,
        "max_total": max_total,
        "mean_total_fraction": mean_total / max_total if max_total else 0.0,
        "components": {k: _mean([g["components"].get(k, 0.0) for g in graded]) for k in components},
        "evidence_validity": true / checked if checked else 0.0,
        "claims_checked": checked,
        "claims_true": true,
        "with_claims": _mean([float(g["claims_checked"] > 0) for g in graded]),
        "answered": _mean([float(g["predicted"] is not None) for g in graded]),
        "mean_chars": _mean([float(len(g["completion"])) for g in graded]),
    }


def summarize(rows: Sequence[dict[str, Any]], *, vote_k: int, intervals: bool = True,
              **options: Any) -> dict[str, Any]:
    """Summary metrics of one model from its per-item rows; with ``intervals``, also
    ``"intervals"``: each metric's bootstrap interval over items (:func:`metric_intervals`;
    ``options``: its resamples, confidence, seed)."""
    summary: dict[str, Any] = {"items": len(rows)}
    greedy = [r["greedy"] for r in rows if r.get("greedy") is not None]
    if greedy:
        summary["greedy"] = pass_metrics(greedy)
        for key in ("strict_accuracy", "approx_accuracy", "format_adherence", "evidence_validity",
                    "coherence", "mean_total", "mean_total_fraction"):
            summary[key] = summary["greedy"][key]
    votes = [r["vote"] for r in rows if r.get("vote") is not None]
    if votes:
        samples = [s for v in votes for s in v["samples"]]
        summary["vote"] = {
            "k": vote_k,
            "samples": pass_metrics(samples),
            "strict_accuracy": _mean([float(v["majority"]["correct"]) for v in votes]),
            "approx_accuracy": _mean([float(v["majority"]["approx_correct"]) for v in votes]),
            "any_correct": _mean([float(v["majority"]["any_correct"]) for v in votes]),
            "abstained": _mean([float(v["majority"]["answer"] is None) for v in votes]),
        }
        summary["vote_strict_accuracy"] = summary["vote"]["strict_accuracy"]
        summary["vote_approx_accuracy"] = summary["vote"]["approx_accuracy"]
        if not greedy:
            for key in ("format_adherence", "evidence_validity", "mean_total_fraction"):
                summary[key] = summary["vote"]["samples"][key]
    if intervals and rows:
        summary["intervals"] = {k: iv.as_dict() for k, iv in metric_intervals(rows, **options).items()}
    return summary


# ----------------------------------------------------------------------------------------
# uncertainty


def row_ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Each row's item id (its ``index`` when it has none), as text."""
    return [str(r["id"] if r.get("id") is not None else r.get("index", i)) for i, r in enumerate(rows)]


def item_columns(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-item values of every metric in :func:`summarize`, named as in :func:`report_rows`, for
    :mod:`dsa_cast_train.stats`: a 0/1 or float per item whose mean is the metric, or a
    ``stats.Ratio`` (evidence validity: true claims over checked claims, over all items).

    Greedy metrics when every row has a greedy grade, else the mean over each item's vote samples;
    majority-vote metrics when every row has a vote."""
    out: dict[str, Any] = {}
    greedy = bool(rows) and all(r.get("greedy") is not None for r in rows)
    if greedy:
        per_item = [[r["greedy"]] for r in rows]
    elif rows and all(r.get("vote") is not None for r in rows):
        per_item = [list(r["vote"]["samples"]) for r in rows]
    else:
        per_item = []
    if per_item:
        def col(fn: Callable[[dict[str, Any]], float]) -> list[float]:
            return [_mean([float(fn(g)) for g in gs]) for gs in per_item]

        if greedy:
            out["strict_accuracy"] = col(lambda g: g["correct"])
            out["approx_accuracy"] = col(lambda g: g["approx_correct"])
        out["format_adherence"] = col(lambda g: g["exact_format"])
        out["evidence_validity"] = stats.Ratio([sum(g["claims_true"] for g in gs) for gs in per_item],
                                               [sum(g["claims_checked"] for g in gs) for gs in per_item])
        if greedy and all(gs[0].get("coherence") is not None for gs in per_item):
            out["coherence"] = col(lambda g: g["coherence"])
        if greedy:
            out["mean_total"] = col(lambda g: g["total"])
        out["mean_total_fraction"] = col(lambda g: g["total"] / g["max_total"] if g["max_total"] else 0.0)
        if greedy:
            for name in DSA.sections:
                out[f"section:{name}"] = col(lambda g, name=name: name in g.get("sections_present", ()))
            out["section:answer_block"] = col(lambda g: bool(g.get("answer_block")))
            for k in sorted({k for gs in per_item for g in gs for k in g["components"]}):
                out[f"component:{k}"] = col(lambda g, k=k: g["components"].get(k, 0.0))
    if rows and all(r.get("vote") is not None for r in rows):
        majority = [r["vote"]["majority"] for r in rows]
        out["vote_strict_accuracy"] = [float(m["correct"]) for m in majority]
        out["vote_approx_accuracy"] = [float(m["approx_correct"]) for m in majority]
        out["vote_any_correct"] = [float(m["any_correct"]) for m in majority]
    return out


def metric_intervals(rows: Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """``stats.Interval`` of each metric over the items of one model (``kwargs``: resamples,
    confidence, seed of :func:`dsa_cast_train.stats.bootstrap`)."""
    return stats.bootstrap(item_columns(rows), **kwargs)


def paired_comparison(label_a: str, rows_a: Sequence[dict[str, Any]], label_b: str,
                      rows_b: Sequence[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """metric(a) - metric(b) on the items both evaluated (matched by id), each with its bootstrap
    interval (items resampled jointly): ``{"a", "b", "matched", "only_a", "only_b", "differences"}``."""
    res = stats.paired_by_id(row_ids(rows_a), item_columns(rows_a), row_ids(rows_b), item_columns(rows_b),
                             **kwargs)
    return {"a": label_a, "b": label_b, "matched": res.matched, "only_a": res.only_a, "only_b": res.only_b,
            "differences": {k: iv.as_dict() for k, iv in res.differences.items()}}


# ----------------------------------------------------------------------------------------
# reports


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def interval_cell(value: Any, interval: Mapping[str, Any] | None, *, signed: bool = False) -> str:
    """``0.500 [0.250, 0.750]`` for a metric with its interval, else the plain value."""
    if interval is None:
        return _fmt(value) if not signed or not isinstance(value, float) else f"{value:+.3f}"
    return stats.Interval.from_dict(interval).format(signed=signed)


def report_rows(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(metric name, value per model) rows shared by the Markdown table and the chart."""
    names = ["strict_accuracy", "approx_accuracy", "format_adherence", "evidence_validity",
             "coherence", "mean_total", "mean_total_fraction", "vote_strict_accuracy", "vote_approx_accuracy"]
    rows = [(n, [s.get(n) for s in summaries]) for n in names if any(n in s for s in summaries)]
    sections = list(dict.fromkeys(k for s in summaries for k in s.get("greedy", {}).get("section_presence", {})))
    rows += [(f"section:{k}", [s.get("greedy", {}).get("section_presence", {}).get(k) for s in summaries])
             for k in sections]
    extra = [("vote_any_correct", [s.get("vote", {}).get("any_correct") for s in summaries])]
    comps = sorted({k for s in summaries for k in s.get("greedy", {}).get("components", {})})
    extra += [(f"component:{k}", [s.get("greedy", {}).get("components", {}).get(k) for s in summaries])
              for k in comps]
    return rows + [r for r in extra if any(v is not None for v in r[1])]


INTERVAL_NOTE = ("Brackets: 95 % percentile-bootstrap interval over items (10,000 resamples); a difference "
                 "column is paired: the same items, matched by id, resampled jointly for both models.")


def metrics_table(labels: Sequence[str], summaries: Sequence[dict[str, Any]],
                  comparisons: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Markdown table lines: one column per model (value [interval]) and one per paired comparison
    (``paired_comparison`` dicts: a - b [interval])."""
    head = ["metric", *labels, *[f"{c['a']} - {c['b']}" for c in comparisons]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in report_rows(summaries):
        cells = [interval_cell(v, s.get("intervals", {}).get(name)) for v, s in zip(values, summaries)]
        for c in comparisons:
            a, b = (values[labels.index(c[k])] if c[k] in labels else None for k in ("a", "b"))
            diff = c.get("differences", {}).get(name)
            plain = a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            cells.append(interval_cell(plain, diff, signed=True) if diff or plain is not None else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(path: str | Path, labels: Sequence[str], summaries: Sequence[dict[str, Any]],
                   config: config_lib.PipelineConfig, comparison: Mapping[str, Any] | None = None,
                   source: str | None = None) -> None:
    """The side-by-side Markdown summary, every value with its interval; with two models, the
    first-minus-second column (paired, when ``comparison`` is given)."""
    ev = config.eval
    if comparison is None and len(labels) == 2:
        comparison = {"a": labels[0], "b": labels[1]}  # plain difference of the two values
    lines = [f"# Evaluation: {summaries[0]['items']} items of {config.data.source} ({ev.split})", "",
             f"Greedy: {'yes' if ev.greedy else 'no'}; majority vote@{ev.vote_k} "
             f"(temperature {ev.temperature}, top-k {ev.top_k}, top-p {ev.top_p}); "
             f"rubric `{ev.rubric}`; approximate = within {ev.approx_tolerance:.0%}; "
             f"max {ev.max_new_tokens} new tokens.", ""]
    if source:
        lines += [f"Data: {source}.", ""]
    lines += metrics_table(labels, summaries, [comparison] if comparison else [])
    lines += ["", "strict/approx/format/evidence/mean_total: greedy pass; vote_*: majority vote; "
              "component:*: mean weighted contribution (greedy). " + INTERVAL_NOTE, ""]
    if comparison and comparison.get("matched") is not None:
        lines += [f"Paired on {comparison['matched']} items ({comparison['only_a']} only in {comparison['a']}, "
                  f"{comparison['only_b']} only in {comparison['b']}).", ""]
    _write_text(path, "\n".join(lines))


def _write_text(path: str | Path, text: str) -> None:
    """Write under a temporary name, then rename (a crash never leaves half a report)."""
    io.atomic_write_text(path, text)


def _interval(summary: Mapping[str, Any], name: str) -> tuple[float, float] | None:
    iv = summary.get("intervals", {}).get(name)
    return (iv["low"], iv["high"]) if iv else None


def write_chart(path: str | Path, labels: Sequence[str], summaries: Sequence[dict[str, Any]],
                comparisons: Sequence[Mapping[str, Any]] = (), *, title: str | None = None) -> None:
    """Grouped bars of the headline [0, 1] metrics per model, each with its 95 % interval as an
    error bar and its value printed on it (a 0 is drawn as a line at 0, so no bar is invisible);
    with ``comparisons`` (``paired_comparison`` dicts), a second panel of the paired differences
    with their intervals. The figure is written under a temporary name, then renamed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in HEADLINE if any(m in s for s in summaries)]
    diffs = [c for c in comparisons if c.get("differences")]
    width_in = max(7.0, 1.15 * len(metrics) * max(1, len(summaries)) / 2 + 2.5)
    fig = Figure(figsize=(width_in, 4.8 + (3.2 if diffs else 0.0)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2 if diffs else 1, 1, 1)
    n = max(len(summaries), 1)
    width = 0.8 / n
    colors = [f"C{i}" for i in range(n)]
    for i, (label, s) in enumerate(zip(labels, summaries)):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(metrics))]
        values = [float(s.get(m) or 0.0) for m in metrics]
        bounds = [_interval(s, m) for m in metrics]
        err = [[max(v - b[0], 0.0) if b else 0.0 for v, b in zip(values, bounds)],
               [max(b[1] - v, 0.0) if b else 0.0 for v, b in zip(values, bounds)]]
        ax.bar(xs, values, width=width * 0.92, color=colors[i], label=label, yerr=err, capsize=2,
               error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
        for x, v, b in zip(xs, values, bounds):
            if v == 0.0:  # an empty bar: draw it as a line at 0 in its colour
                ax.hlines(0.004, x - width * 0.46, x + width * 0.46, colors=colors[i], linewidth=2.5)
            top = max(v, b[1] if b else v)
            ax.text(x, top + 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5, rotation=90 if n > 2 else 0)
    ax.set_xticks(list(range(len(metrics))))
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=8)
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    ax.set_ylim(0, 1.18)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("share of items (mean total: share of the maximum)", fontsize=8)
    items = summaries[0]["items"] if summaries else 0
    ax.set_title(title or f"DSA evaluation: {', '.join(labels)} on {items} items "
                 f"(error bars: 95 % bootstrap interval over items)", fontsize=9)
    ax.legend(fontsize=8, loc="upper right", ncol=n)
    ax.grid(axis="y", alpha=0.3)
    if diffs:
        _difference_panel(fig.add_subplot(2, 1, 2), metrics, diffs)
    fig.tight_layout()
    with io.atomic_output(path, "wb") as fh:
        fig.savefig(fh, dpi=110, format=Path(path).suffix.lstrip(".") or "png")


def _difference_panel(ax: Any, metrics: Sequence[str], comparisons: Sequence[Mapping[str, Any]]) -> None:
    """Paired differences (later minus earlier) per metric: a point with its interval, value printed."""
    n = len(comparisons)
    width = 0.8 / n
    lows = [0.0]
    highs = [0.0]
    for i, c in enumerate(comparisons):
        xs, ys, err = [], [], [[], []]
        for j, m in enumerate(metrics):
            d = c["differences"].get(m)
            if d is None:
                continue
            x = j + (i - (n - 1) / 2) * width
            xs.append(x)
            ys.append(d["estimate"])
            err[0].append(max(d["estimate"] - d["low"], 0.0))
            err[1].append(max(d["high"] - d["estimate"], 0.0))
            lows.append(d["low"])
            highs.append(d["high"])
            ax.text(x + width * 0.12, d["estimate"], f"{d['estimate']:+.2f}", fontsize=6.5, va="center")
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=f"C{i + 3}", capsize=3, markersize=4,
                    label=f"{c['a']} - {c['b']} ({c.get('matched', '?')} paired items)")
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    span = max(max(highs) - min(lows), 0.2)
    ax.set_ylim(min(lows) - 0.15 * span, max(highs) + 0.3 * span)
    ax.set_xticks(list(range(len(metrics))))
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=8)
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    ax.set_ylabel("paired difference", fontsize=8)
    ax.set_title("Change on the same items (95 % paired bootstrap interval; an interval crossing 0: no clear change)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


# ----------------------------------------------------------------------------------------
# run


def targets(ev: config_lib.EvalConfig) -> list[tuple[str, str | None, int | None]]:
    """(label, checkpoint or None for base weights, step) for each model to evaluate."""
    out = [(_label(ev.checkpoint, ev.step), ev.checkpoint, ev.step)]
    if ev.compare is not None:
        other = None if ev.compare == BASE else ev.compare
        out.append((_label(other, None), other, None))
    if len(out) == 2 and out[0][:2] == out[1][:2]:
        raise config_lib.ConfigError("eval.compare names the same model as eval.checkpoint")
    return out


def _label(checkpoint: str | None, step: int | None) -> str:
    if checkpoint is None:
        return BASE
    root, split_step = split_checkpoint_path(checkpoint, step)
    named = root
    while named.name in ("checkpoints", "actor") and named.parent != named:
        named = named.parent  # <run>/checkpoints[/actor] -> <run>
    name = named.name
    step = split_step if split_step is not None else step
    return f"{name}@{step}" if step is not None else name


def _evaluate_model(loaded: Any, examples: Sequence[Any], label: str, config: config_lib.PipelineConfig,
                    system: str) -> list[dict[str, Any]]:
    ev = config.eval
    prefill = config.data.prefill_reasoning
    prompts = [ex.prompt_text(system_prompt=system, prefill=prefill) for ex in examples]
    refs = [numbers.extract_reference(ex.answer) for ex in examples]
    budget = prompt_budget(loaded.tokenizer, prompts, ev.max_prompt_length)
    rows = [{"label": label, "index": i, "id": ex.id, "question": ex.question, "answer": ex.answer,
             "prompt": p, "greedy": None, "vote": None} for i, (ex, p) in enumerate(zip(examples, prompts))]

    def grade(text: str, i: int) -> dict[str, Any]:
        return grade_completion(completion_for_grading(text, prefill), examples[i].answer,
                                examples[i].question, rubric=ev.rubric, tolerance=ev.approx_tolerance,
                                reference=refs[i])

    if ev.greedy:
        log.info("%s: greedy pass over %d items, %d per batch (compiling the sampler: first batch only)",
                 label, len(prompts), ev.batch_size)
        sampler = make_sampler(loaded, budget + ev.max_new_tokens)
        with progress.Progress(len(prompts), f"{label} greedy", unit="items") as bar:
            texts = generate(loaded, prompts, max_new_tokens=ev.max_new_tokens, max_prompt_length=budget,
                             batch_size=ev.batch_size, sampler=sampler, on_batch=bar.update)
        for i, text in enumerate(texts):
            rows[i]["greedy"] = grade(text, i)
        log.info("%s: greedy pass over %d items in %.1f s", label, len(prompts), bar.elapsed)
    if ev.vote_k:
        log.info("%s: vote@%d pass over %d items (compiling the sampler: first batch only)", label, ev.vote_k,
                 len(prompts))
        repeated = [p for p in prompts for _ in range(ev.vote_k)]
        with progress.Progress(len(prompts), f"{label} vote@{ev.vote_k}", unit="items") as bar:
            texts = generate(loaded, repeated, max_new_tokens=ev.max_new_tokens, max_prompt_length=budget,
                             batch_size=ev.batch_size * ev.vote_k, temperature=ev.temperature,
                             top_k=ev.top_k, top_p=ev.top_p, seed=ev.seed,
                             on_batch=lambda n: bar.update(n // ev.vote_k))
        for i in range(len(prompts)):
            samples = [grade(texts[i * ev.vote_k + j], i) for j in range(ev.vote_k)]
            rows[i]["vote"] = {"k": ev.vote_k, "samples": samples, "majority": majority_vote(samples)}
        log.info("%s: vote@%d pass in %.1f s", label, ev.vote_k, bar.elapsed)
    return rows


def run(config: config_lib.PipelineConfig, run_dir: str | Path, *, overwrite: bool = False) -> EvalResult:
    """Evaluate the configured model(s) on ``eval.num_items`` test items; write the reports."""
    t0 = time.perf_counter()
    distributed.initialize()  # before the run directory is touched (multi-host)
    with runs.prepare(run_dir, "evaluate", config, overwrite=overwrite, resumable=False) as run_info, \
            runs.logging_to(run_info):
        log.info("evaluation in %s (config: %s)", run_info.path, run_info.config_file.name)
        return _run(config, run_info, t0)


def _run(config: config_lib.PipelineConfig, run_info: runs.RunDir, t0: float) -> EvalResult:
    import jax

    ev = config.eval
    plan = targets(ev)
    mesh = models.make_mesh(config.mesh.fsdp, config.mesh.tp)
    examples = load_examples(config.data, ev.split, limit=ev.num_items)
    if not examples:
        raise ValueError(f"no evaluation items in split {ev.split!r}")
    source = data_source(config.data, (ev.split,))
    system = system_prompt(config.data)
    # Base weights first, so checkpoints can be restored into the same model afterwards.
    order = sorted(range(len(plan)), key=lambda i: plan[i][1] is not None)
    loaded = None
    results: dict[int, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for i in order:
        label, checkpoint, step = plan[i]
        if loaded is None:
            loaded = models.load(config.model, mesh)
        restored = None
        if checkpoint is not None:
            restored = models.restore_params(loaded.model, checkpoint, step)
            log.info("%s: restored step %d from %s", label, restored, checkpoint)
        with mesh:
            rows = _evaluate_model(loaded, examples, label, config, system)
        summary = summarize(rows, vote_k=ev.vote_k)
        summary.update({"label": label, "checkpoint": checkpoint, "step": restored})
        results[i] = (rows, summary)
    labels = tuple(p[0] for p in plan)
    summaries = tuple(results[i][1] for i in range(len(plan)))
    comparison = (paired_comparison(labels[0], results[0][0], labels[1], results[1][0])
                  if len(plan) == 2 else None)
    files = {k: run_info.path / v for k, v in
             (("items", ITEMS_FILE), ("json", SUMMARY_JSON), ("md", SUMMARY_MD), ("png", SUMMARY_PNG))}
    if jax.process_index() == 0:
        runs.write_jsonl(files["items"], (row for i in range(len(plan)) for row in results[i][0]),
                         ensure_ascii=False)
        runs.write_json(files["json"], {"labels": list(labels), "summaries": list(summaries),
                                        "comparison": comparison, "data_source": source,
                                        "config": config_lib.to_dict(config)})
        write_markdown(files["md"], labels, summaries, config, comparison, source=source_text(source))
        write_chart(files["png"], labels, summaries, [comparison] if comparison else [])
    for label, s in zip(labels, summaries):
        log.info("%s: strict %.3f approx %.3f format %.3f evidence %.3f vote %s", label,
                 s.get("strict_accuracy", math.nan), s.get("approx_accuracy", math.nan),
                 s.get("format_adherence", math.nan), s.get("evidence_validity", math.nan),
                 _fmt(s.get("vote_strict_accuracy")))
    return EvalResult(str(run_info.path), labels, summaries, str(files["items"]), str(files["json"]),
                      str(files["md"]), str(files["png"]), round(time.perf_counter() - t0, 3))


def source_text(source: Mapping[str, Any] | None) -> str | None:
    """``embedded GSM8K (dir; test sha256 ...)`` from a ``data_source`` dict."""
    if not source:
        return None
    digests = ", ".join(f"{split} sha256 `{d}`" for split, d in source.get("sha256", {}).items())
    return f"{source['kind']} {source.get('name', 'data')} `{source['location']}`" + (f" ({digests})" if digests else "")


# ----------------------------------------------------------------------------------------
# regrading saved per-item files


@dataclass(frozen=True)
class Regrade:
    """Saved evaluations graded again: a summary (with intervals) per model, and the paired
    differences of each model with the one before it."""

    labels: tuple[str, ...]
    summaries: tuple[dict[str, Any], ...]
    comparisons: tuple[dict[str, Any], ...]
    sources: tuple[str, ...]
    """The file each model's rows came from."""


def _check_item(record: dict[str, Any]) -> str | None:
    greedy = record.get("greedy")
    if greedy is not None and not (isinstance(greedy, dict) and isinstance(greedy.get("completion"), str)):
        return "field 'greedy' must be null or an object with a string 'completion'"
    vote = record.get("vote")
    if vote is not None and not (isinstance(vote, dict) and isinstance(vote.get("samples"), list)
                                 and all(isinstance(x, dict) and isinstance(x.get("completion"), str)
                                         for x in vote["samples"])):
        return "field 'vote' must be null or an object whose 'samples' each hold a string 'completion'"
    if greedy is None and vote is None:
        return "no 'greedy' or 'vote' completion to grade"
    if not isinstance(record.get("answer"), (str, int, float)) or isinstance(record.get("answer"), bool):
        return "field 'answer' (the reference) is missing or not a string or number"
    if record.get("question") is not None and not isinstance(record["question"], str):
        return "field 'question' must be a string"
    return None


def regrade_rows(records: Sequence[dict[str, Any]], *, rubric: str = "dsa-cast",
                 tolerance: float = 0.1) -> list[dict[str, Any]]:
    """Rows with every greedy completion and vote sample graded again by ``dsa_cast.score.grade``
    against the row's ``answer`` (with its ``question``); majority votes recomputed."""
    out = []
    for i, r in enumerate(records):
        answer = str(r["answer"])
        question = r.get("question") or ""
        ref = numbers.extract_reference(answer)

        def grade(completion: str) -> dict[str, Any]:
            return grade_completion(completion, answer, question, rubric=rubric, tolerance=tolerance, reference=ref)

        row = {"label": r.get("label"), "index": r.get("index", i), "id": r.get("id", r.get("index", i)),
               "question": r.get("question"), "answer": answer, "greedy": None, "vote": None}
        if r.get("greedy") is not None:
            row["greedy"] = grade(r["greedy"]["completion"])
        if r.get("vote") is not None:
            samples = [grade(x["completion"]) for x in r["vote"]["samples"]]
            row["vote"] = {"k": len(samples), "samples": samples, "majority": majority_vote(samples)}
        out.append(row)
    return out


def regrade(paths: Sequence[str | Path], *, rubric: str = "dsa-cast", tolerance: float = 0.1,
            **kwargs: Any) -> Regrade:
    """Grade saved per-item files again and recompute every metric with its interval, and the
    paired difference of each model with the previous one (files in order; a file holding two
    models, as from ``--compare``, counts as two, in file order).

    Rows need ``answer`` and a ``greedy`` (and/or ``vote``) completion; ``id`` pairs items across
    files (the row number when absent) and ``label`` names the model (the file name when absent).
    A bad line raises ``DataFormatError`` naming the file and line. ``kwargs``: resamples,
    confidence, seed for :mod:`dsa_cast_train.stats`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    for number, path in enumerate(paths, start=1):
        read = read_jsonl(path, check=_check_item)
        if not read.records:
            raise FileNotFoundError(f"{path}: no items to regrade")
        stem = Path(path).name.removesuffix(".jsonl").removesuffix("_items")
        names: dict[str, str] = {}  # label in this file -> label in the report
        for _, record in read.records:
            label = str(record.get("label") or stem)
            if label not in names:  # the same model name in an earlier file: keep the two apart
                unique = next(n for n in (label, f"{label} ({stem})", f"{label} (file {number})") if n not in groups)
                names[label] = unique
                groups[unique], sources[unique] = [], str(path)
            groups[names[label]].append(record)
    labels = tuple(groups)
    vote_ks = {label: max((len(r["vote"]["samples"]) for r in rows if r.get("vote")), default=0)
               for label, rows in groups.items()}
    graded = {label: regrade_rows(rows, rubric=rubric, tolerance=tolerance) for label, rows in groups.items()}
    summaries = []
    for label in labels:
        summary = summarize(graded[label], vote_k=vote_ks[label], **kwargs)
        summary["label"] = label
        summaries.append(summary)
    comparisons = tuple(paired_comparison(labels[i], graded[labels[i]], labels[i - 1], graded[labels[i - 1]], **kwargs)
                        for i in range(1, len(labels)))
    return Regrade(labels, tuple(summaries), comparisons, tuple(sources[label] for label in labels))


def write_regrade(out_dir: str | Path, result: Regrade, *, rubric: str) -> tuple[Path, Path, Path]:
    """``summary.json``, ``summary.md`` and ``summary.png`` of a :class:`Regrade` in a new or empty
    ``out_dir`` (anything else is refused: nothing is overwritten)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise runs.RunDirError(f"{out} exists and is not an empty directory; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / SUMMARY_MD, out / SUMMARY_JSON, out / SUMMARY_PNG
    runs.write_json(js, {"labels": list(result.labels), "sources": list(result.sources),
                         "summaries": list(result.summaries), "comparisons": list(result.comparisons),
                         "rubric": rubric})
    _write_text(md, "\n".join(regrade_lines(result, rubric=rubric)))
    write_chart(png, result.labels, result.summaries, result.comparisons,
                title=f"Regraded ({rubric}): {', '.join(result.labels)} on {result.summaries[0]['items']} items "
                      "(error bars: 95 % bootstrap interval over items)")
    return js, md, png


def regrade_lines(result: Regrade, *, rubric: str) -> list[str]:
    """Markdown of a :class:`Regrade`: sources, the metrics table with intervals, paired differences."""
    lines = [f"# Regraded evaluation (rubric `{rubric}`)", ""]
    lines += [f"- `{label}`: {s['items']} items from `{src}`"
              for label, s, src in zip(result.labels, result.summaries, result.sources)]
    lines += [""] + metrics_table(result.labels, result.summaries, result.comparisons)
    lines += ["", "Greedy completions graded again with `dsa_cast.score.grade`. " + INTERVAL_NOTE]
    lines += [f"{c['a']} - {c['b']}: paired on {c['matched']} items ({c['only_a']} only in {c['a']}, "
              f"{c['only_b']} only in {c['b']})." for c in result.comparisons]
    return lines + [""]


def _regrade_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsa_cast_train.evaluate --regrade",
        description="Grade saved per-item evaluation files again (items.jsonl, docs/results/*/eval_*_items.jsonl) "
                    "and print every metric with its 95 %% bootstrap interval, and the paired difference of each "
                    "file with the one before it.")
    parser.add_argument("--regrade", nargs="+", required=True, metavar="FILE", help="per-item JSONL files, in order")
    parser.add_argument("--rubric", default="dsa-cast", choices=sorted(rubrics.RUBRICS))
    parser.add_argument("--tolerance", type=float, default=config_lib.EvalConfig.approx_tolerance,
                        help="approximate accuracy: |pred - ref| <= tolerance x |ref|")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write summary.json, summary.md, summary.png in this new directory")
    args = parser.parse_args(argv)
    if args.resamples <= 0:
        parser.error("--resamples must be > 0")
    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        parser.error("--tolerance must be a finite number >= 0")
    try:
        result = regrade(args.regrade, rubric=args.rubric, tolerance=args.tolerance, resamples=args.resamples,
                         seed=args.seed)
        files = write_regrade(args.out, result, rubric=args.rubric) if args.out else ()
    except cli.user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(regrade_lines(result, rubric=args.rubric)))
    if files:
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


# ----------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsa_cast_train.evaluate``: evaluate one model or compare two (or, with
    ``--regrade FILE ...``, recompute the reports of saved per-item files)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--regrade" or a.startswith("--regrade=") for a in args):
        return _regrade_main(args)

    parser = cli.stage_parser("evaluate", __doc__, example="--eval.num_items 50",
                              run_dir_help="output directory for the reports",
                              overwrite_help="replace an earlier evaluation in --run-dir")
    parser.add_argument("--checkpoint", help="checkpoint root or step dir (sets eval.checkpoint)")
    parser.add_argument("--compare", help="second checkpoint, or 'base' (sets eval.compare)")
    invocation = cli.resolve(parser, argv, lambda a: [(f"eval.{name}", getattr(a, name))
                                                      for name in ("checkpoint", "compare")
                                                      if getattr(a, name) is not None])
    if invocation is None:
        return 0
    result = cli.execute(run, invocation)
    if result is None:
        return 2
    for label, s in zip(result.labels, result.summaries):
        print(f"{label}: strict {_fmt(s.get('strict_accuracy'))}  approx {_fmt(s.get('approx_accuracy'))}  "
              f"format {_fmt(s.get('format_adherence'))}  vote {_fmt(s.get('vote_strict_accuracy'))}")
    print(f"reports: {result.summary_md}, {result.summary_png}, {result.items_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
