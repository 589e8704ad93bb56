"""The pipeline end to end on the tiny preset, killed mid-GRPO and resumed: SFT is not redone,
GRPO continues from its checkpoint, and the run ends with the report and the exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("tunix")
pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
KILL_TIMEOUT_S = 420  # the killed run must reach its first GRPO checkpoint within this

PIPELINE_OVERRIDES = (
    ("grpo.max_steps", 10),
    ("grpo.batch_size", 2),
    ("grpo.micro_batch_size", 2),
    ("grpo.max_prompt_length", 256),
    ("grpo.max_new_tokens", 8),
    ("grpo.save_every_steps", 1),
    ("grpo.keep_checkpoints", 2),
    ("export.format", "both"),
)


def _sha(path: Path) -> str:
    from dsa_cast_train.export import sha256_file

    return sha256_file(path)


def _files(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, _sha(p)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pipeline_config(tiny_config):
    from dsa_cast_train import config

    return config.apply_overrides(tiny_config, PIPELINE_OVERRIDES)


@pytest.fixture(scope="module")
def killed_then_resumed(pipeline_config, tmp_path_factory):
    """Start the CLI in a subprocess, SIGKILL it once GRPO has written a checkpoint, then rerun."""
    from dsa_cast_train import config, grpo, models, pipeline

    tmp = tmp_path_factory.mktemp("pipeline")
    cfg_file = tmp / "config.json"
    cfg_file.write_text(config.to_json(pipeline_config))
    run_dir = tmp / "run"
    ckpts = run_dir / "grpo" / grpo.CHECKPOINT_DIR / grpo.ACTOR_SUBDIR
    log = open(tmp / "killed.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dsa_cast_train.pipeline", "--preset", "none", "--config", str(cfg_file),
         "--run-dir", str(run_dir)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    try:
        while not models.checkpoint_steps(ckpts):
            assert proc.poll() is None, f"pipeline exited early ({proc.returncode}): {(tmp / 'killed.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no GRPO checkpoint in time"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # only the process group this test started
        except ProcessLookupError:  # it had already exited (the assertion above says why)
            pass
        proc.wait()
        log.close()
    killed_at = models.checkpoint_steps(ckpts)[-1]
    before = pipeline.read_manifest(run_dir)
    sft_files = _files(run_dir / "sft")
    result = pipeline.run(pipeline_config, run_dir)
    return result, before, killed_at, sft_files


def test_kill_mid_grpo_leaves_earlier_stages_recorded(killed_then_resumed):
    _, before, killed_at, _ = killed_then_resumed
    assert set(before) == {"eval_base", "sft", "eval_sft"}, "the kill must land inside the GRPO stage"
    assert 1 <= killed_at < 10


def test_resume_skips_finished_stages_and_continues_grpo(killed_then_resumed):
    result, before, killed_at, sft_files = killed_then_resumed
    assert result.skipped == ("eval_base", "sft", "eval_sft")
    assert result.ran == ("grpo", "eval_grpo", "export", "report")
    for stage in result.skipped:  # the manifest entries of finished stages are untouched
        assert result.manifest[stage] == before[stage]
    assert all(_files(result.run_dir / "sft")[k] == v for k, v in sft_files.items()), "SFT files changed"
    g = result.manifest["grpo"]["summary"]
    assert g["resumed_from"] >= killed_at and g["actor_steps"] == 10
    sft_log = (result.run_dir / "sft" / "run.log").read_text()
    assert sft_log.count("starting SFT") == 1 and "resuming SFT" not in sft_log


def test_end_to_end_outputs(killed_then_resumed, pipeline_config):
    from dsa_cast_train import config, export, grpo, models

    result, *_ = killed_then_resumed
    run = result.run_dir
    assert result.stages == ("eval_base", "sft", "eval_sft", "grpo", "eval_grpo", "export", "report")
    # one resolved config for the run; stages got it with only the wiring paths filled in
    assert json.loads((run / "config.json").read_text()) == config.to_dict(pipeline_config)
    grpo_cfg = json.loads((run / "grpo" / "config.json").read_text())
    assert grpo_cfg["grpo"]["init_checkpoint"] == str(run / "sft" / "checkpoints")
    assert json.loads((run / "eval_grpo" / "config.json").read_text())["eval"]["checkpoint"] == str(
        run / "grpo" / "checkpoints" / "actor")
    # GRPO metrics are continuous across the kill: steps 1..10 once each
    assert [r["step"] for r in grpo.read_metrics(run / "grpo" / "metrics.jsonl")] == list(range(1, 11))
    # evaluations: three models, the trained ones restored from their newest checkpoints
    evals = {s: result.manifest[s]["summary"] for s in ("eval_base", "eval_sft", "eval_grpo")}
    assert evals["eval_base"]["label"] == "base"
    assert evals["eval_sft"]["metrics"]["step"] == pipeline_config.sft.max_steps
    assert evals["eval_grpo"]["metrics"]["step"] == 10
    # report: side by side with deltas, and the chart
    md = result.report_md.read_text()
    assert "| metric | base | post-SFT | post-GRPO | post-SFT - base | post-GRPO - post-SFT |" in md
    for stage, label in (("eval_base", "base"), ("eval_sft", "post-SFT"), ("eval_grpo", "post-GRPO")):
        s = json.loads(Path(evals[stage]["summary_json"]).read_text())["summaries"][0]
        assert f"{s['strict_accuracy']:.3f}" in md.split("| strict_accuracy |")[1].split("\n")[0]
    assert "## GRPO rollouts" in md and "## Export" in md
    assert result.report_png.read_bytes()[:4] == b"\x89PNG"
    # exports: a verified zip of the newest GRPO step, a safetensors directory equal to it
    e = result.manifest["export"]["summary"]
    manifest = export.verify_zip(e["zip"]["path"])
    assert manifest["step"] == 10 and e["zip"]["step"] == 10
    assert manifest["config"] == config.to_dict(
        config.apply_overrides(pipeline_config, [("export.checkpoint", str(run / "grpo" / "checkpoints" / "actor")),
                                                 ("export.output", str(run / "export"))]))
    assert any(n.startswith("run/grpo/metrics.jsonl") for n in (f["path"] for f in manifest["files"]))
    loaded = models.load(pipeline_config.model)
    models.restore_params(loaded.model, run / "grpo" / "checkpoints" / "actor", 10)
    reloaded = export.load_safetensors_model(e["safetensors"]["directory"], loaded.model_config)
    want, got = export._flat_params(loaded.model), export._flat_params(reloaded)
    import numpy as np

    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_array_equal(np.asarray(want[k]), np.asarray(got[k]), err_msg=k)


def test_rerun_of_a_finished_pipeline_does_nothing(killed_then_resumed, pipeline_config):
    from dsa_cast_train import pipeline

    result, *_ = killed_then_resumed
    again = pipeline.run(pipeline_config, result.run_dir)
    assert again.ran == () and again.skipped == result.stages
    assert again.manifest == result.manifest


def test_plan_and_stage_wiring(pipeline_config, tmp_path):
    from dsa_cast_train import config, pipeline

    assert pipeline.plan(config.apply_overrides(pipeline_config, [("stages", ["grpo", "export"])])) == (
        "grpo", "export")
    only_sft = config.apply_overrides(pipeline_config, [("stages", ["sft", "evaluate"])])
    assert pipeline.plan(only_sft) == ("eval_base", "sft", "eval_sft", "report")
    with pytest.raises(config.ConfigError, match="unknown stage"):
        pipeline.plan(config.apply_overrides(pipeline_config, [("stages", ["sft", "dance"])]))
    with pytest.raises(config.ConfigError, match="export.checkpoint"):
        pipeline.plan(config.apply_overrides(pipeline_config, [("stages", ["export"])]))
    grpo_only = config.apply_overrides(pipeline_config, [("stages", ["grpo"]), ("grpo.init_checkpoint", "/x")])
    assert pipeline.stage_config(grpo_only, "grpo", tmp_path).grpo.init_checkpoint == "/x"
    exp = pipeline.stage_config(only_sft, "export", tmp_path).export
    assert exp.checkpoint == str(tmp_path / "sft" / "checkpoints") and exp.output == str(tmp_path / "export")


def test_changed_training_config_refuses_resume(killed_then_resumed, pipeline_config):
    from dsa_cast_train import config, pipeline, runs

    result, *_ = killed_then_resumed
    with pytest.raises(runs.RunDirError, match="sft.learning_rate"):
        pipeline.run(config.apply_overrides(pipeline_config, [("sft.learning_rate", 1e-4)]), result.run_dir)



@pytest.mark.parametrize("manifest, message", [
    ('{"sft": [1, 2]}', r"entry 'sft' must be an object"),
    ('{"sft": {"status": "done"}}', r"entry 'sft' is done but has no 'finished' time"),
    ('{"sft": {"status": "done", "finished": "x", "summary": 3}}', r"entry 'sft' must be an object with a 'summary'"),
    ('{"sft": ' + "[" * 100_000 + "]" * 100_000 + "}", r"unreadable stage manifest: .*nested too deeply"),
    ('[1]', r"unreadable stage manifest: .*expected a JSON object"),
])
def test_bad_stage_manifest_is_a_run_dir_error(tmp_path, manifest, message):
    from dsa_cast_train import pipeline, runs

    (tmp_path / pipeline.MANIFEST_FILE).write_text(manifest)
    with pytest.raises(runs.RunDirError, match=message):
        pipeline.read_manifest(tmp_path)
