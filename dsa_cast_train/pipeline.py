"""The whole recipe in one run directory: evaluate the base model, SFT, evaluate, GRPO, evaluate,
export, and a report that puts the three evaluations side by side.

Layout of ``<run_dir>``::

    run.json, config.json, run.log   the pipeline's marker, its one resolved config, its log
    stages.json                      stage manifest: each finished stage with its summary
    eval_base/  sft/  eval_sft/  grpo/  eval_grpo/   one run directory per stage
    export/                          <run>_step<N>.zip and hf/ (HuggingFace safetensors)
    report.md, report.png            base vs post-SFT vs post-GRPO

Every stage gets the same resolved config, with only the wiring between stages filled in
(``eval.checkpoint`` of the evaluations, ``grpo.init_checkpoint`` = the SFT checkpoints,
``export.checkpoint`` = the newest trained checkpoints). ``config.stages`` picks the stages:
``sft``, ``grpo``, ``evaluate`` (all three evaluations and the report) and ``export``.

Resuming: a stage recorded as finished in ``stages.json`` is never redone; an interrupted SFT or
GRPO stage resumes from its newest checkpoint; an interrupted evaluation or export is redone.

CLI: ``python -m dsa_cast_train.pipeline --run-dir runs/demo`` (the preset for the hardware found,
``config.default_preset()``: ``demo-cpu`` or ``demo-gpu``) or ``--preset tiny`` for a wiring check.
Each stage's time and peak resident memory go to the log, ``stages.json`` and the report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dsa_cast import io
from dsa_cast_train import config as config_lib
from dsa_cast_train import memory, resources, runs

log = logging.getLogger("dsa_cast_train.pipeline")

MANIFEST_FILE = "stages.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
EXPORT_DIR = "export"

ALL_STAGES = ("eval_base", "sft", "eval_sft", "grpo", "eval_grpo", "export", "report")
"""Stage names in execution order (also their subdirectory names)."""
CONFIG_STAGES = ("sft", "grpo", "evaluate", "export")
"""Values accepted in ``config.stages``."""
RESUME_MUST_MATCH = ("model", "data", "sft", "grpo", "eval", "stages")
"""Config sections that may not change when a pipeline directory is resumed (finished stages
would no longer match the config); ``export`` and ``mesh`` may."""
REPORT_LABELS = {"eval_base": "base", "eval_sft": "post-SFT", "eval_grpo": "post-GRPO"}


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run did and where its outputs are."""

    run_dir: Path
    stages: tuple[str, ...]
    """Planned stages, in order."""
    ran: tuple[str, ...]
    """Stages executed by this call."""
    skipped: tuple[str, ...]
    """Stages already finished in an earlier call (read from the manifest)."""
    manifest: Mapping[str, Any]
    report_md: Path | None
    report_png: Path | None
    seconds: float


_STAGE_NEEDS: dict[str, frozenset[str]] = {
    "eval_base": frozenset({"evaluate"}),
    "sft": frozenset({"sft"}),
    "eval_sft": frozenset({"evaluate", "sft"}),
    "grpo": frozenset({"grpo"}),
    "eval_grpo": frozenset({"evaluate", "grpo"}),
    "export": frozenset({"export"}),
    "report": frozenset({"evaluate"}),
}
"""Each stage runs when ``config.stages`` holds all of these."""


def plan(config) -> tuple[str, ...]:
    """The stages ``config.stages`` asks for, in execution order."""
    unknown = sorted(set(config.stages) - set(CONFIG_STAGES))
    if unknown:
        raise config_lib.ConfigError(f"stages: unknown stage(s) {unknown}; choose from {list(CONFIG_STAGES)}")
    want = set(config.stages)
    if not want & {"sft", "grpo", "evaluate", "export"}:
        raise config_lib.ConfigError("stages is empty: nothing to run")
    out = [stage for stage in ALL_STAGES if _STAGE_NEEDS[stage] <= want]
    if "export" in out and not want & {"sft", "grpo"} and config.export.checkpoint is None:
        raise config_lib.ConfigError("stages: export without sft or grpo needs export.checkpoint")
    return tuple(out)


def sft_checkpoints(run_dir: Path) -> Path:
    return run_dir / "sft" / "checkpoints"


def grpo_checkpoints(run_dir: Path) -> Path:
    from dsa_cast_train import grpo

    return run_dir / "grpo" / grpo.CHECKPOINT_DIR / grpo.ACTOR_SUBDIR


def stage_config(config, stage: str, run_dir: Path):
    """The config a stage runs with: the pipeline's, plus the paths that link the stages."""
    stages = set(config.stages)
    sets: list[tuple[str, Any]] = []
    if stage == "eval_base":
        sets = [("eval.checkpoint", None), ("eval.step", None), ("eval.compare", None)]
    elif stage == "eval_sft":
        sets = [("eval.checkpoint", str(sft_checkpoints(run_dir))), ("eval.step", None), ("eval.compare", None)]
    elif stage == "eval_grpo":
        sets = [("eval.checkpoint", str(grpo_checkpoints(run_dir))), ("eval.step", None), ("eval.compare", None)]
    elif stage == "grpo" and "sft" in stages:
        sets = [("grpo.init_checkpoint", str(sft_checkpoints(run_dir)))]
    elif stage == "export":
        if "grpo" in stages:
            sets = [("export.checkpoint", str(grpo_checkpoints(run_dir)))]
        elif "sft" in stages:
            sets = [("export.checkpoint", str(sft_checkpoints(run_dir)))]
        if config.export.output is None:
            sets.append(("export.output", str(run_dir / EXPORT_DIR)))
    return config_lib.apply_overrides(config, sets) if sets else config


# --------------------------------------------------------------------------------------------
# manifest
# --------------------------------------------------------------------------------------------


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """``stages.json`` of a pipeline directory (empty when absent); each entry must be an object
    (``{"status": ..., "finished": ..., "summary": {...}}``), else :class:`runs.RunDirError`
    naming the stage."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        data = io.load_json(path)
    except io.InputError as exc:
        raise runs.RunDirError(f"unreadable stage manifest: {exc}; pass --overwrite") from exc
    for stage, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("summary", {}), dict):
            raise runs.RunDirError(f"{path}: entry {stage!r} must be an object with a 'summary' object, got "
                                   f"{type(entry).__name__}; pass --overwrite")
        if entry.get("status") == "done" and not isinstance(entry.get("finished"), str):
            raise runs.RunDirError(f"{path}: entry {stage!r} is done but has no 'finished' time; pass --overwrite")
    return data


def _record_stage(run_dir: Path, manifest: dict[str, Any], stage: str, summary: Mapping[str, Any],
                  started: float, seconds: float) -> None:
    manifest[stage] = {
        "status": "done",
        "started": _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(timespec="seconds"),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "summary": dict(summary),
    }
    from dsa_cast_train import distributed

    if distributed.is_primary():  # multi-host: process 0 writes, the others keep it in memory
        runs.write_json(run_dir / MANIFEST_FILE, manifest)


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------


def _run_eval(config, run_dir: Path, stage: str) -> dict[str, Any]:
    from dsa_cast_train import evaluate

    # an evaluation is not resumable: an interrupted one is redone (overwrite only ever
    # deletes a directory carrying the run marker)
    res = evaluate.run(stage_config(config, stage, run_dir), run_dir / stage, overwrite=True)
    return {"label": res.labels[0], "summary_json": res.summary_json, "summary_md": res.summary_md,
            "seconds": res.seconds, "metrics": _headline(res.summaries[0])}


def _headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("items", "strict_accuracy", "approx_accuracy", "format_adherence", "evidence_validity",
            "mean_total", "mean_total_fraction", "vote_strict_accuracy", "vote_approx_accuracy", "step")
    return {k: summary[k] for k in keys if k in summary}


def _run_sft(config, run_dir: Path, stage: str) -> dict[str, Any]:
    from dsa_cast_train import sft

    res = sft.run(stage_config(config, stage, run_dir), run_dir / stage)
    return {"start_step": res.start_step, "final_step": res.final_step, "resumed": res.resumed,
            "checkpoint_dir": str(res.checkpoint_dir), "first_loss": res.train_losses[0] if res.train_losses else None,
            "last_loss": res.train_losses[-1] if res.train_losses else None,
            "tokens_per_second": res.tokens_per_second, "train_seconds": res.train_seconds,
            "loss_curve": _existing(Path(res.run_dir) / sft.LOSS_CURVE_FILE)}


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _run_grpo(config, run_dir: Path, stage: str) -> dict[str, Any]:
    from dsa_cast_train import grpo

    res = grpo.run(stage_config(config, stage, run_dir), run_dir / stage)
    first = grpo.read_metrics(res.metrics_path)
    return {"actor_steps": res.actor_steps, "resumed_from": res.resumed_from,
            "checkpoint_dir": str(res.checkpoint_dir), "prompts": res.prompts,
            "dropped_prompts": res.dropped_prompts, "reward_curve": str(res.reward_curve) if res.reward_curve else None,
            "first": first[0] if first else None, "last": dict(res.last) if res.last else None,
            "seconds": res.seconds}


def _run_export(config, run_dir: Path, stage: str) -> dict[str, Any]:
    from dsa_cast_train import export

    res = export.run(stage_config(config, stage, run_dir), run_dir)
    out: dict[str, Any] = {}
    if res.zip is not None:
        out["zip"] = {"path": str(res.zip.path), "step": res.zip.step, "files": res.zip.files,
                      "bytes": res.zip.bytes, "sha256": res.zip.sha256}
    if res.safetensors is not None:
        s = res.safetensors
        out["safetensors"] = {"directory": str(s.directory), "tensors": s.tensors, "parameters": s.parameters,
                              "dtype": s.dtype, "verified": s.verified}
    return out


def _run_report(config, run_dir: Path, stage: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    from dsa_cast_train import distributed

    if not distributed.is_primary():  # multi-host: process 0 writes the report
        return {"report_md": str(run_dir / REPORT_MD), "report_png": None}
    paths = write_report(run_dir, manifest, config)
    return {"report_md": str(paths[0]), "report_png": str(paths[1]) if paths[1] else None}


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "eval_base": _run_eval, "eval_sft": _run_eval, "eval_grpo": _run_eval,
    "sft": _run_sft, "grpo": _run_grpo, "export": _run_export,
}


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _eval_summaries(manifest: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]], list[list[dict[str, Any]]],
                                                           dict[str, Any] | None]:
    """Labels, summaries (``summary.json``), per-item rows (``items.jsonl``) and data source of the
    finished evaluations, in stage order."""
    from dsa_cast_train import evaluate
    from dsa_cast_train.data.jsonl import read_jsonl

    labels, summaries, rows, source = [], [], [], None
    for stage in ("eval_base", "eval_sft", "eval_grpo"):
        entry = manifest.get(stage)
        if not entry:
            continue
        summary_json = Path(entry["summary"]["summary_json"])
        data = io.load_json(summary_json)
        labels.append(REPORT_LABELS[stage])
        summaries.append(data["summaries"][0])
        source = source or data.get("data_source")
        items = summary_json.parent / evaluate.ITEMS_FILE
        rows.append([r for _, r in read_jsonl(items).records] if items.is_file() else [])
    return labels, summaries, rows, source


def write_report(run_dir: str | Path, manifest: Mapping[str, Any], config) -> tuple[Path, Path | None]:
    """``report.md`` (evaluations side by side, each value with its 95 % bootstrap interval, and
    the paired change each training stage made on the same items; the GRPO reward trend, the
    exports, stage timings) and ``report.png`` (bars with intervals, and the paired changes)."""
    from dsa_cast_train import evaluate

    run_path = Path(run_dir)
    labels, summaries, rows, source = _eval_summaries(manifest)
    comparisons = [evaluate.paired_comparison(labels[i], rows[i], labels[i - 1], rows[i - 1])
                   for i in range(1, len(labels)) if rows[i] and rows[i - 1]]
    lines = [f"# DSA pipeline report: {config.name}", "",
             f"Run directory `{run_path}`; model {config_lib.describe_model(config.model)}; "
             f"{summaries[0]['items'] if summaries else 0} evaluation items of {config.data.source} "
             f"({config.eval.split}); rubric `{config.eval.rubric}`.", ""]
    text = evaluate.source_text(source)
    if text:
        lines += [f"Data: {text}.", ""]
    if summaries:
        lines += ["## Evaluations", ""] + evaluate.metrics_table(labels, summaries, comparisons)
        lines += ["", "strict/approx/format/evidence/mean_total: greedy pass; vote_*: majority vote; "
                  "component:*: mean weighted contribution (greedy). Differences are later minus earlier. "
                  + evaluate.INTERVAL_NOTE, ""]
    lines += _grpo_section(manifest.get("grpo"))
    lines += _export_section(manifest.get("export"))
    lines += _curves_section(manifest)
    lines += _stages_section(manifest)
    lines.append("")
    md = run_path / REPORT_MD
    io.atomic_write_text(md, "\n".join(lines))
    png = None
    if summaries:
        png = run_path / REPORT_PNG
        evaluate.write_chart(png, labels, summaries, comparisons,
                             title=f"{config.name}: {', '.join(labels)} on {summaries[0]['items']} held-out items "
                                   f"(error bars: 95 % bootstrap interval over items)")
    return md, png


def _grpo_section(grpo_entry: Mapping[str, Any] | None) -> list[str]:
    """Report lines: GRPO steps and prompts, first and last rollout rewards (none without GRPO)."""
    if not grpo_entry:
        return []
    s = grpo_entry["summary"]
    first, last = s.get("first") or {}, s.get("last") or {}
    resumed = f" (resumed from step {s['resumed_from']})" if s.get("resumed_from") else ""
    return ["## GRPO rollouts", "",
            f"{s['actor_steps']} actor steps{resumed}, {s['prompts']} prompts "
            f"({s['dropped_prompts']} too long, dropped). Reward curve: `{s.get('reward_curve')}`.", "",
            "| rollouts | mean reward | format adherence | accuracy |", "|---|---|---|---|",
            f"| first step | {_fmt(first.get('reward_mean'))} | {_fmt(first.get('format_adherence'))} | "
            f"{_fmt(first.get('accuracy'))} |",
            f"| last step | {_fmt(last.get('reward_mean'))} | {_fmt(last.get('format_adherence'))} | "
            f"{_fmt(last.get('accuracy'))} |", ""]


def _export_section(exp: Mapping[str, Any] | None) -> list[str]:
    """Report lines: the zip and safetensors exports (none without an export stage)."""
    if not exp:
        return []
    s = exp["summary"]
    lines = ["## Export", ""]
    if "zip" in s:
        lines.append(f"- zip: `{s['zip']['path']}` (step {s['zip']['step']}, {s['zip']['files']} files, "
                     f"sha256 `{s['zip']['sha256']}`)")
    if "safetensors" in s:
        st = s["safetensors"]
        lines.append(f"- safetensors: `{st['directory']}` ({st['tensors']} tensors, {st['parameters']:,} "
                     f"parameters, {st['dtype']}, reload verified: {st['verified']})")
    lines.append("")
    return lines


def _curves_section(manifest: Mapping[str, Any]) -> list[str]:
    """Report lines: paths of the SFT loss and GRPO reward curves that were written."""
    curves = [(name, entry["summary"].get(key)) for name, entry, key in
              (("SFT loss", manifest.get("sft"), "loss_curve"), ("GRPO reward", manifest.get("grpo"), "reward_curve"))
              if entry and entry["summary"].get(key)]
    if not curves:
        return []
    return ["## Curves", ""] + [f"- {name}: `{path}`" for name, path in curves] + [""]


def _stages_section(manifest: Mapping[str, Any]) -> list[str]:
    """Report lines: the table of finished stages with seconds and memory."""
    lines = ["## Stages", "", "Peak RSS: the stage's own peak resident memory (the kernel's high-water mark, "
             "reset at the stage's start, so it includes what earlier stages still hold); `*` marks a process "
             "peak where that reset is unavailable. RSS after: resident memory once the stage's leftovers "
             "were released (`dsa_cast_train.memory.release`).", "",
             "| stage | seconds | peak RSS (MiB) | RSS after (MiB) | finished |", "|---|---|---|---|---|"]
    for stage in ALL_STAGES:
        if stage in manifest:
            summary = manifest[stage].get("summary", {})
            peak = summary.get("peak_rss_mib")
            mark = "" if peak is None or summary.get("peak_rss_per_stage") else "*"
            lines.append(f"| {stage} | {_fmt(manifest[stage]['seconds'])} | {_fmt(peak)}{mark} | "
                         f"{_fmt(summary.get('rss_after_mib'))} | {manifest[stage]['finished']} |")
    return lines


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def restartable(run_dir: str | Path, config) -> str | None:
    """The changed settings, when ``run_dir`` holds an earlier pipeline that cannot be resumed with
    ``config`` but holds nothing to protect: no stage finished and no training checkpoint was
    written (e.g. a first run stopped by a data error). ``None`` otherwise: resume, or refuse as
    ``runs.prepare`` does."""
    path = Path(run_dir).expanduser().resolve()
    try:
        marker = io.load_json(path / runs.MARKER)
        old = runs.saved_config(path)
        manifest = read_manifest(path)
    except (OSError, ValueError, runs.RunDirError):  # io.InputError is a ValueError
        return None
    if not isinstance(marker, dict) or marker.get("stage") != "pipeline":
        return None
    if any(isinstance(entry, dict) and entry.get("status") == "done" for entry in manifest.values()):
        return None
    if any(d.is_dir() and any(d.iterdir()) for d in (sft_checkpoints(path), path / "grpo" / "checkpoints")):
        return None
    changed = [c for c in runs.config_diff(old, config_lib.to_dict(config))
               if any(c[0] == m or c[0].startswith(m + ".") for m in RESUME_MUST_MATCH)]
    return "; ".join(f"{name}: {a!r} -> {b!r}" for name, a, b in changed) or None


def run(config, run_dir: str | Path, *, overwrite: bool = False) -> PipelineResult:
    """Run (or resume) the pipeline in ``run_dir``; see the module docstring for the layout.

    Multi-host (``docs/multihost.md``): every process runs this with the same arguments; process
    0 writes the manifest and the report. The export stage runs on one host only, so a
    multi-process run that plans it is refused (a :class:`ConfigError`) before anything starts.
    """
    from dsa_cast_train import distributed

    t0 = time.perf_counter()
    distributed.initialize()  # before the run directory is touched
    stages = plan(config)
    if "export" in stages and distributed.process_count() > 1:
        raise config_lib.ConfigError(
            "stages: the export stage runs on one host; on a multi-host run leave it out "
            "(--set 'stages=[\"sft\", \"grpo\", \"evaluate\"]') and export afterwards on one host: "
            "python -m dsa_cast_train.export --run-dir <run dir>/grpo --safetensors <run dir>/export/hf")
    restart = None if overwrite else restartable(run_dir, config)
    with runs.prepare(run_dir, "pipeline", config, overwrite=overwrite or restart is not None,
                      must_match=RESUME_MUST_MATCH) as rd, runs.logging_to(rd):
        run_path = rd.path
        if restart is not None:
            log.info("no stage of the earlier run in %s finished and it wrote no checkpoint: started afresh "
                     "with the new settings (%s)", run_path, restart)
        manifest = read_manifest(run_path)
        ran, skipped = [], []
        log.info("%s pipeline in %s: %s (full config: %s)", "resuming" if rd.resumed else "starting", run_path,
                 config_lib.summary_line(config), rd.config_file.name)
        for stage in stages:
            if manifest.get(stage, {}).get("status") == "done":
                log.info("stage %s: already finished at %s, skipped", stage, manifest[stage]["finished"])
                skipped.append(stage)
                continue
            log.info("stage %s: starting", stage)
            started, t = time.time(), time.perf_counter()
            with memory.PeakTracker() as peak:
                if stage == "report":
                    summary = _run_report(config, run_path, stage, manifest)
                else:
                    summary = _RUNNERS[stage](config, run_path, stage)
            seconds = time.perf_counter() - t
            after = memory.release()  # the next stage starts from what this one really keeps
            summary = {**summary, **peak.result.as_dict(),
                       "rss_after_mib": None if after is None else round(after / memory.MIB, 1)}
            _record_stage(run_path, manifest, stage, summary, started, seconds)
            ran.append(stage)
            log.info("stage %s: done in %.1f s, peak RSS %.0f MiB%s, RSS after release %s MiB", stage, seconds,
                     peak.result.peak_mib, "" if peak.result.per_stage else " (process peak)",
                     "n/a" if after is None else f"{after / memory.MIB:.0f}")
    report = manifest.get("report", {}).get("summary", {})
    return PipelineResult(
        run_dir=run_path, stages=stages, ran=tuple(ran), skipped=tuple(skipped), manifest=manifest,
        report_md=Path(report["report_md"]) if report.get("report_md") else None,
        report_png=Path(report["report_png"]) if report.get("report_png") else None,
        seconds=time.perf_counter() - t0)


def _all_done(run_dir: str | Path, stages: Sequence[str]) -> bool:
    try:
        manifest = read_manifest(run_dir)
    except runs.RunDirError:
        return False
    return all(isinstance(manifest.get(s), dict) and manifest[s].get("status") == "done" for s in stages)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsa_cast_train.pipeline``."""
    from dsa_cast_train import cli

    parser = cli.stage_parser("pipeline", __doc__, example="--grpo.max_steps 50",
                              run_dir_help="pipeline run directory (resumed if it exists)",
                              overwrite_help="delete an earlier pipeline in --run-dir first",
                              default_preset=config_lib.AUTO_PRESET)
    invocation = cli.resolve(parser, argv)
    if invocation is None:
        return 0
    config = invocation.config
    try:
        stages = plan(config)
    except config_lib.ConfigError as exc:
        parser.error(str(exc))
    if not _all_done(invocation.args.run_dir, stages):  # something left to run: does it fit here?
        verdict = resources.check(config, invocation.args.run_dir)
        if invocation.args.preset == config_lib.AUTO_PRESET:
            if not verdict.fits:
                print(f"error: {verdict.refusal()}", file=sys.stderr)
                return 2
            print(f"preset {config.name}, picked for this hardware: {verdict.summary()} "
                  f"(--preset tiny: a wiring check in about a minute)")
        elif not verdict.fits:
            print(f"warning: {verdict.shortfall()}; starting anyway, as --preset names it", file=sys.stderr)
    result = cli.execute(run, invocation)
    if result is None:
        return 2
    print(f"pipeline {result.run_dir}: ran {', '.join(result.ran) or 'nothing'}"
          f"{'; skipped ' + ', '.join(result.skipped) if result.skipped else ''} "
          f"({len(stages)} stages, {result.seconds:.1f} s)")
    if result.report_md:
        print(f"report: {result.report_md}" + (f", {result.report_png}" if result.report_png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
