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
there are two) and ``summary.png``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from dsa_cast_train import config as config_lib
from dsa_cast_train import runs

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
    """A Tunix ``Sampler`` over ``loaded.model`` with a KV cache of ``cache_size`` tokens."""
    from tunix.generate import sampler as sampler_lib

    cfg = loaded.model_config
    cache = sampler_lib.CacheConfig(cache_size=cache_size, num_layers=cfg.num_layers,
                                    num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
    return sampler_lib.Sampler(loaded.model, loaded.tokenizer, cache)


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
             top_p: float | None = None, seed: int = 0, sampler: Any = None) -> list[str]:
    """Completions (text after the prompt, stopped at EOS / ``<end_of_turn>``) for ``prompts``.

    ``temperature == 0`` decodes greedily; otherwise top-p/top-k sampling seeded per batch
    (``seed + batch index``). The last batch is padded by repeating its last prompt so that
    every call has the same shape (one compilation).
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
    return out


def completion_for_grading(text: str, prefill: bool) -> str:
    """The model's full answer: the pre-filled ``<reasoning>\\n`` belongs to it."""
    return f"<reasoning>\n{text}" if prefill else text


# ----------------------------------------------------------------------------------------
# grading and metrics


def _fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    from dsa_cast import numbers

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
    from dsa_cast import score

    grade = score.grade(completion, answer, rubric=rubric, question=question, detail=True)
    detail = grade.detail
    verdicts = detail.verdicts if detail is not None else ()
    parsed = detail.parsed if detail is not None else None
    if parsed is None:
        from dsa_cast import parse

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
    from dsa_cast.schema import DSA

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


def summarize(rows: Sequence[dict[str, Any]], *, vote_k: int) -> dict[str, Any]:
    """Summary metrics of one model from its per-item rows."""
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
    return summary


# ----------------------------------------------------------------------------------------
# reports


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


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


def write_markdown(path: str | Path, labels: Sequence[str], summaries: Sequence[dict[str, Any]],
                   config: config_lib.PipelineConfig) -> None:
    """The side-by-side Markdown summary (with a first-minus-second column for two models)."""
    ev = config.eval
    head = ["metric", *labels] + ([f"{labels[0]} - {labels[1]}"] if len(labels) == 2 else [])
    lines = [f"# Evaluation: {summaries[0]['items']} items of {config.data.source} ({ev.split})", "",
             f"Greedy: {'yes' if ev.greedy else 'no'}; majority vote@{ev.vote_k} "
             f"(temperature {ev.temperature}, top-k {ev.top_k}, top-p {ev.top_p}); "
             f"rubric `{ev.rubric}`; approximate = within {ev.approx_tolerance:.0%}; "
             f"max {ev.max_new_tokens} new tokens.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, values in report_rows(summaries):
        cells = [_fmt(v) for v in values]
        if len(values) == 2:
            a, b = values
            cells.append(_fmt(a - b) if isinstance(a, float) and isinstance(b, float) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "strict/approx/format/evidence/mean_total: greedy pass; vote_*: majority vote; "
              "component:*: mean weighted contribution (greedy).", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def write_chart(path: str | Path, labels: Sequence[str], summaries: Sequence[dict[str, Any]]) -> None:
    """Grouped bar chart of the headline [0, 1] metrics per model (matplotlib, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in HEADLINE if any(m in s for s in summaries)]
    fig = Figure(figsize=(max(6.0, 1.3 * len(metrics) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(summaries), 1)
    for i, (label, s) in enumerate(zip(labels, summaries)):
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(metrics))]
        ax.bar(xs, [float(s.get(m) or 0.0) for m in metrics], width=width, label=label)
    ax.set_xticks(list(range(len(metrics))))
    ax.set_xticklabels([m.replace("_", "\n") for m in metrics], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share")
    ax.set_title(f"DSA evaluation ({summaries[0]['items']} items)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


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
    from dsa_cast_train.models import split_checkpoint_path

    root, split_step = split_checkpoint_path(checkpoint, step)
    named = root
    while named.name in ("checkpoints", "actor") and named.parent != named:
        named = named.parent  # <run>/checkpoints[/actor] -> <run>
    name = named.name
    step = split_step if split_step is not None else step
    return f"{name}@{step}" if step is not None else name


def _evaluate_model(loaded: Any, examples: Sequence[Any], label: str, config: config_lib.PipelineConfig,
                    system: str) -> list[dict[str, Any]]:
    from dsa_cast import numbers

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
        t = time.perf_counter()
        sampler = make_sampler(loaded, budget + ev.max_new_tokens)
        texts = generate(loaded, prompts, max_new_tokens=ev.max_new_tokens, max_prompt_length=budget,
                         batch_size=ev.batch_size, sampler=sampler)
        for i, text in enumerate(texts):
            rows[i]["greedy"] = grade(text, i)
        log.info("%s: greedy pass over %d items in %.1f s", label, len(prompts), time.perf_counter() - t)
    if ev.vote_k:
        t = time.perf_counter()
        repeated = [p for p in prompts for _ in range(ev.vote_k)]
        texts = generate(loaded, repeated, max_new_tokens=ev.max_new_tokens, max_prompt_length=budget,
                         batch_size=ev.batch_size * ev.vote_k, temperature=ev.temperature,
                         top_k=ev.top_k, top_p=ev.top_p, seed=ev.seed)
        for i in range(len(prompts)):
            samples = [grade(texts[i * ev.vote_k + j], i) for j in range(ev.vote_k)]
            rows[i]["vote"] = {"k": ev.vote_k, "samples": samples, "majority": majority_vote(samples)}
        log.info("%s: vote@%d pass in %.1f s", label, ev.vote_k, time.perf_counter() - t)
    return rows


def run(config: config_lib.PipelineConfig, run_dir: str | Path, *, overwrite: bool = False) -> EvalResult:
    """Evaluate the configured model(s) on ``eval.num_items`` test items; write the reports."""
    t0 = time.perf_counter()
    with runs.prepare(run_dir, "evaluate", config, overwrite=overwrite, resumable=False) as run_info, \
            runs.logging_to(run_info):
        log.info("evaluation in %s with config:\n%s", run_info.path, config_lib.to_json(config))
        return _run(config, run_info, t0)


def _run(config: config_lib.PipelineConfig, run_info: runs.RunDir, t0: float) -> EvalResult:
    import jax

    from dsa_cast_train import models, sft

    ev = config.eval
    plan = targets(ev)
    models.maybe_initialize_distributed()
    mesh = models.make_mesh(config.mesh.fsdp, config.mesh.tp)
    examples = sft.load_examples(config.data, ev.split, limit=ev.num_items)
    if not examples:
        raise ValueError(f"no evaluation items in split {ev.split!r}")
    system = sft.system_prompt(config.data)
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
    files = {k: run_info.path / v for k, v in
             (("items", ITEMS_FILE), ("json", SUMMARY_JSON), ("md", SUMMARY_MD), ("png", SUMMARY_PNG))}
    if jax.process_index() == 0:
        with files["items"].open("w", encoding="utf-8") as fh:
            for i in range(len(plan)):
                for row in results[i][0]:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        runs.write_json(files["json"], {"labels": list(labels), "summaries": list(summaries),
                                        "config": config_lib.to_dict(config)})
        write_markdown(files["md"], labels, summaries, config)
        write_chart(files["png"], labels, summaries)
    for label, s in zip(labels, summaries):
        log.info("%s: strict %.3f approx %.3f format %.3f evidence %.3f vote %s", label,
                 s.get("strict_accuracy", math.nan), s.get("approx_accuracy", math.nan),
                 s.get("format_adherence", math.nan), s.get("evidence_validity", math.nan),
                 _fmt(s.get("vote_strict_accuracy")))
    return EvalResult(str(run_info.path), labels, summaries, str(files["items"]), str(files["json"]),
                      str(files["md"]), str(files["png"]), round(time.perf_counter() - t0, 3))


# ----------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsa_cast_train.evaluate``: evaluate one model or compare two."""
    from dsa_cast_train import cli

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
