"""Resource checks before a run (dsa_cast_train.resources), the pipeline's `--preset auto` refusal,
retrying a first run that finished nothing, and the progress display (dsa_cast_train.progress)."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest

from dsa_cast_train import config as cfg
from dsa_cast_train import progress, resources

GIB = 2**30


def test_meminfo_and_cgroup_give_the_smaller_room(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   10485760 kB\n")
    assert resources.available_memory(meminfo, tmp_path / "no-cgroup") == 10 * GIB
    group = tmp_path / "cg"
    group.mkdir()
    (group / "memory.max").write_text("max\n")
    (group / "memory.current").write_text("123\n")
    assert resources.available_memory(meminfo, group) == 10 * GIB  # no limit
    (group / "memory.max").write_text(f"{8 * GIB}\n")
    (group / "memory.current").write_text(f"{2 * GIB}\n")
    assert resources.available_memory(meminfo, group) == 6 * GIB
    assert resources.available_memory(tmp_path / "absent", tmp_path / "absent") is None


def test_check_names_every_short_resource_and_a_smaller_preset(tmp_path, monkeypatch):
    demo = cfg.load_preset("demo-cpu")
    monkeypatch.setattr(resources, "available_memory", lambda *a: 6 * GIB)
    monkeypatch.setattr(resources, "free_disk", lambda path: 2 * 10**9)
    monkeypatch.setattr(resources, "_model_cached", lambda config: False)
    verdict = resources.check(demo, tmp_path / "run")
    assert not verdict.fits and {n.what for n in verdict.short} == {"memory", "disk"}
    text = verdict.refusal()
    assert "needs about 7.7 GiB, 6.0 GiB available" in text
    assert "needs about 7.8 GB, 2.0 GB available" in text  # run directory + converted model, one file system
    assert "--preset tiny" in text and "--preset demo-cpu" in text
    monkeypatch.setattr(resources, "available_memory", lambda *a: 20 * GIB)
    monkeypatch.setattr(resources, "free_disk", lambda path: 50 * 10**9)
    fine = resources.check(demo, tmp_path / "run")
    assert fine.fits and "7.7 GiB memory (20.0 available)" in fine.summary() and "19 min" in fine.summary()
    # what an earlier start already wrote in the run directory is no longer needed
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "blob").write_bytes(b"x" * 10**6)
    again = resources.check(demo, tmp_path / "run")
    assert again.needs[1].needed == pytest.approx(6.7 + 1.1 - 0.001)
    monkeypatch.setattr(resources, "available_memory", lambda *a: None)  # unknown: not held against it
    assert resources.check(demo, tmp_path / "run").fits


def test_pipeline_auto_refuses_before_creating_anything(tmp_path, monkeypatch, capsys):
    from dsa_cast_train import pipeline

    monkeypatch.setattr(cfg, "default_preset", lambda platform=None: "demo-cpu")
    monkeypatch.setattr(resources, "available_memory", lambda *a: 4 * GIB)
    run_dir = tmp_path / "demo"
    assert pipeline.main(["--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this machine cannot run preset demo-cpu: memory: needs about 7.7 GiB, 4.0 GiB")
    assert "--preset tiny" in err and not run_dir.exists()


def test_failed_first_run_does_not_block_a_retry_with_new_settings(tmp_path, capsys):
    """A run stopped by bad data before any stage finished is retried with other settings as a
    fresh run; once a checkpoint exists (or a stage finished), a change is refused as before."""
    from dsa_cast_train import pipeline, runs

    run_dir = tmp_path / "run"
    args = ["--preset", "tiny", "--run-dir", str(run_dir)]
    assert pipeline.main([*args, "--set", f"data.path={tmp_path / 'nowhere'}"]) == 2
    assert "nowhere" in capsys.readouterr().err and (run_dir / "run.json").is_file()
    assert pipeline.main([*args, "--set", f"data.path={tmp_path / 'elsewhere'}"]) == 2
    err = capsys.readouterr().err
    assert "elsewhere" in err and "cannot resume" not in err  # failed on the data again, not on the dir
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["path"] == str(tmp_path / "elsewhere")
    assert "started afresh with the new settings (data.path:" in (run_dir / "run.log").read_text()
    # with a training checkpoint on disk, the change is refused and nothing is deleted
    (run_dir / "sft" / "checkpoints" / "2").mkdir(parents=True)
    new = cfg.load_config("tiny", overrides=[("data.path", str(tmp_path / "third"))])
    assert pipeline.restartable(run_dir, new) is None
    with pytest.raises(runs.RunDirError, match="data.path"):
        pipeline.run(new, run_dir)
    assert (run_dir / "sft" / "checkpoints" / "2").is_dir()


def test_old_config_files_compare_by_content(tmp_path):
    """A config.json written before a field was added (or one stopped being written) still resumes."""
    from dsa_cast_train import runs

    demo = cfg.load_preset("demo-cpu")
    runs.prepare(tmp_path / "r", "sft", demo)
    old = json.loads((tmp_path / "r" / "config.json").read_text())
    old["model"].update(num_layers=2, embed_dim=64)  # as earlier versions wrote it
    old.pop("requirements")
    (tmp_path / "r" / "config.json").write_text(json.dumps(old))
    assert runs.prepare(tmp_path / "r", "sft", demo).resumed


def test_absl_cpu_warning_is_dropped_and_others_kept(tmp_path):
    from dsa_cast_train import runs

    rd = runs.prepare(tmp_path / "r", "sft", cfg.load_preset("tiny"))
    absl = logging.getLogger("absl")
    with runs.logging_to(rd):
        absl.warning("Skipping non-TPU device: %s. You might be missing jax[tpu] dependency.", "cpu")
        absl.warning("something else worth seeing")
    text = rd.log_file.read_text()
    assert "something else worth seeing" in text and "Skipping non-TPU" not in text
    assert not absl.filters  # nothing global outlives the stage


def test_progress_logs_rate_and_time_left_without_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="dsa_cast_train.progress")
    with progress.Progress(4, "base greedy", unit="items", bar=False, interval=0.0) as bar:
        for _ in range(4):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == bar.lines == 3  # after items 1-3; the caller reports completion
    assert lines[0].startswith("base greedy: 1/4 items [00:00<") and lines[2].startswith("base greedy: 3/4 items [")
    assert all("items/s" in line or "s/items" in line for line in lines)  # the rate, whichever way round


def test_progress_draws_a_bar_on_a_terminal():
    stream = io.StringIO()
    with progress.Progress(10, "sft vote@2", unit="items", bar=True, stream=stream) as bar:
        time.sleep(0.15)  # tqdm redraws at most every 0.1 s
        bar.update(5)
    assert "sft vote@2: 5/10 items [" in stream.getvalue()


def test_progress_meter_text():
    assert progress.eta_text(3, 12, 30.0, "items") == "3/12 items [00:30<01:30, 10.00s/items]"
    assert progress.eta_text(6, 12, 3.0, "items") == "6/12 items [00:03<00:03, 2.00items/s]"


def test_embedded_source_is_named_in_reports(monkeypatch):
    from dsa_cast_train import sft

    monkeypatch.delenv("DSA_CAST_GSM8K", raising=False)
    src = sft.data_source(cfg.load_preset("tiny").data, ("test",))
    assert src["name"] == "GSM8K" and src["kind"] == "embedded" and len(src["sha256"]["test"]) == 64
    assert Path(src["location"]).name == "gsm8k"
