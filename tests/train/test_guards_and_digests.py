"""Issue 10 on the trainers: a non-finite loss stops SFT and GRPO keeping the last good checkpoint
as the newest one; checkpoint digests are recorded for every committed step and a corrupted or
truncated step is an ``error:`` naming the file (restore, resume, evaluate --checkpoint, export);
a resume leaves each (kind, step) record exactly once."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from dsa_cast_train import config as cfg
from dsa_cast_train import digests, guards, runs

# ---------------------------------------------------------------------------- no JAX needed


def test_check_names_the_step_and_value_and_what_is_bad():
    guards.check("SFT", 3, loss=1.5, grad_norm=None)
    with pytest.raises(guards.NonFiniteError, match=r"^SFT step 4: grad_norm inf is not finite") as err:
        guards.check("SFT", 4, loss=2.0, grad_norm=float("inf"))
    assert err.value.first_bad_checkpoint == 4  # the update of step 4 is the garbage one
    with pytest.raises(guards.NonFiniteError, match=r"loss nan") as err:
        guards.check("GRPO", 7, loss=float("nan"), grad_norm=1.0)
    assert err.value.first_bad_checkpoint == 6  # the parameters that gave a NaN loss are garbage


def _steps(root: Path, *steps: int) -> None:
    for s in steps:
        (root / str(s) / "model_params").mkdir(parents=True)
        (root / str(s) / "model_params" / "x").write_bytes(bytes([s]) * 64)


def test_discard_removes_only_this_runs_garbage_steps(tmp_path):
    _steps(tmp_path, 2, 4, 6, 8)
    err = guards.NonFiniteError("SFT", 7, {"loss": math.nan})  # params after update 6 are garbage
    assert guards.discard_checkpoints_from(None, tmp_path, err, start_step=0) == [6, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"] and err.kept == 4
    assert str(err).endswith("the newest checkpoint is now step 4")
    err = guards.NonFiniteError("SFT", 5, {"loss": math.nan})  # resumed from 4: step 4 predates the run
    assert guards.discard_checkpoints_from(None, tmp_path, err, start_step=4) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4"]


def test_digests_record_verify_and_name_the_bad_file(tmp_path):
    _steps(tmp_path, 3)
    step = tmp_path / "3"
    (step / "optimizer_state").mkdir()
    (step / "optimizer_state" / "y").write_bytes(b"opt")
    assert digests.verify(step) is False  # no digest yet: cannot be verified
    assert digests.record_new(tmp_path) == [3] and digests.record_new(tmp_path) == []
    assert digests.verify(step) is True
    data = json.loads((step / digests.DIGEST_FILE).read_text())
    assert sorted(data["files"]) == ["model_params/x", "optimizer_state/y"] and data["step"] == 3
    flipped = bytearray((step / "model_params" / "x").read_bytes())
    flipped[10] ^= 0xFF
    (step / "model_params" / "x").write_bytes(bytes(flipped))
    with pytest.raises(digests.CheckpointError, match=r"model_params/x: sha256 differs from the digest"):
        digests.verify(step)
    assert digests.verify(step, items=("optimizer_state",)) is True  # a params-only check skips it
    (step / "optimizer_state" / "y").write_bytes(b"op")
    with pytest.raises(digests.CheckpointError, match=r"optimizer_state/y: size differs"):
        digests.verify(step, items=("optimizer_state",))
    (step / "optimizer_state" / "y").unlink()
    with pytest.raises(digests.CheckpointError, match=r"optimizer_state/y: missing from checkpoint step 3"):
        digests.verify(step, items=("optimizer_state",))
    (step / digests.DIGEST_FILE).write_text("{not json")
    with pytest.raises(digests.CheckpointError, match="unreadable checkpoint digest file"):
        digests.verify(step)


def test_tracked_manager_still_takes_a_later_class_change(tmp_path):
    """digests.track runs before distributed.watch_preemption swaps the manager's class: the swap
    must still act (a bound ``save`` captured by track hid it on process 0, whose peer then left
    it alone in a collective after a SIGTERM)."""
    calls = []

    class Manager:
        def save(self, step, *args, **kwargs):
            calls.append(("base", step))
            return True

    class Watching(Manager):
        def save(self, step, *args, **kwargs):
            calls.append(("watching", step))
            return super().save(step, *args, **kwargs)

    manager = Manager()
    digests.track(manager, tmp_path)
    manager.__class__ = Watching
    assert manager.save(3) is True
    assert calls == [("watching", 3), ("base", 3)]


def test_sft_resume_truncation_rule(tmp_path):
    from dsa_cast_train import sft

    run = runs.RunDir(tmp_path, "sft", resumed=True)
    _steps(run.checkpoints, 2, 4)
    recs = [{"step": 0, "split": "eval"}] + [{"step": s, "split": "train"} for s in range(1, 7)] + [
        {"step": 4, "split": "eval"}, {"step": 6, "split": "eval"}]
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 7, "spl')
    sft._drop_records_to_redo(run)
    kept = [(r["split"], r["step"]) for r in runs.read_metrics(run.metrics)]
    assert kept == [("eval", 0), ("train", 1), ("train", 2), ("train", 3), ("train", 4)]


# ---------------------------------------------------------------------------- tiny model



def _with(config, **sections):
    return cfg.from_dict({k: {**cfg.to_dict(getattr(config, k)), **v} for k, v in sections.items()}, base=config)


def _all_finite(model) -> bool:
    import jax
    import numpy as np
    from flax import nnx

    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.train
def test_sft_stops_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, capsys):
    from dsa_cast_train import models, sft

    config = _with(tiny_config, sft={"learning_rate": 1e30, "max_steps": 8, "save_every_steps": 1,
                                     "keep_checkpoints": 20, "eval_every_steps": 100, "num_samples": 0})
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json(config))
    run = tmp_path / "run"
    assert sft.main(["--preset", "none", "--config", str(path), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "error: SFT step " in err and "is not finite; training stopped" in err and "Traceback" not in err
    bad = int(err.split("error: SFT step ")[1].split(":")[0])
    records = runs.read_metrics(run / "metrics.jsonl")
    assert records[-1]["step"] == bad and (records[-1]["loss"] is None or records[-1]["grad_norm"] is None)
    steps = models.checkpoint_steps(run / "checkpoints")
    kept = int(err.rsplit("the newest checkpoint is now step ", 1)[1].split()[0]) if steps else 0
    assert steps == list(range(1, kept + 1)) and kept < bad
    for s in steps:
        assert digests.verify(run / "checkpoints" / str(s)) is True
    loaded = models.load(config.model)
    assert models.restore_params(loaded.model, run / "checkpoints") == kept
    assert _all_finite(loaded.model)


@pytest.mark.train
def test_grpo_stops_on_a_non_finite_loss_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    from dsa_cast_train import grpo, models

    config = _with(tiny_config, grpo={
        "max_steps": 5, "batch_size": 2, "micro_batch_size": 2, "num_generations": 2, "max_prompt_length": 256,
        "max_new_tokens": 8, "learning_rate": 1e30, "warmup_fraction": 0.0, "weight_decay": 0.1,
        "save_every_steps": 1, "keep_checkpoints": 10, "eval_prompts": 0})
    with pytest.raises(guards.NonFiniteError, match=r"^GRPO step \d+: .* is not finite") as caught:
        grpo.run(config, tmp_path / "g")
    err = caught.value
    ckpt = tmp_path / "g" / "checkpoints" / "actor"
    steps = models.checkpoint_steps(ckpt)
    assert all(s < err.first_bad_checkpoint for s in steps) and err.kept == (steps[-1] if steps else 0)
    for s in steps:
        assert digests.verify(ckpt / str(s)) is True
    if steps:
        loaded = models.load(config.model)
        models.restore_params(loaded.model, ckpt)
        assert _all_finite(loaded.model)


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    """A copy of the shared 6-step SFT run (to corrupt)."""
    config, first = trained_run
    dst = tmp_path / "copy"
    shutil.copytree(first.run_dir, dst, ignore=shutil.ignore_patterns(runs.LOCK_FILE))
    return config, dst


def _largest(step_dir: Path, item: str = "model_params") -> Path:
    return max((p for p in (step_dir / item).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.train
def test_every_saved_step_has_digests(trained_run):
    from dsa_cast_train import models

    _, first = trained_run
    root = Path(first.checkpoint_dir)
    for s in models.checkpoint_steps(root):
        assert digests.verify(root / str(s)) is True


@pytest.mark.train
def test_corrupted_checkpoint_is_an_error_naming_the_file(run_copy, tmp_path, capsys):
    from dsa_cast_train import evaluate, export, models

    config, run = run_copy
    root = run / "checkpoints"
    newest = root / str(models.checkpoint_steps(root)[-1])
    target = _largest(newest)
    data = bytearray(target.read_bytes())
    for i in range(16):  # 16 flipped bytes inside the largest tensor file
        data[len(data) // 2 + i] ^= 0xFF
    target.write_bytes(bytes(data))
    loaded = models.load(config.model)
    with pytest.raises(digests.CheckpointError, match=rf"{target.name}: sha256 differs"):
        models.restore_params(loaded.model, root)
    # evaluate --checkpoint: exit 2, the file named, no traceback
    cpath = tmp_path / "c.json"
    cpath.write_text(cfg.to_json(config))
    assert evaluate.main(["--preset", "none", "--config", str(cpath), "--run-dir", str(tmp_path / "ev"),
                          "--checkpoint", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"error: {target}: sha256 differs from the digest" in err and "Traceback" not in err
    # export: the zip refuses the step too
    with pytest.raises(export.ExportError, match=rf"{target.name}: sha256 differs"):
        export.export_zip(run, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    # resume: the trainer would restore that step; refused before it does
    from dsa_cast_train import sft

    with pytest.raises(digests.CheckpointError, match=target.name):
        sft.run(config, run)


@pytest.mark.train
def test_truncated_checkpoint_without_digest_is_an_error_not_a_traceback(run_copy):
    from dsa_cast_train import models

    config, run = run_copy
    root = run / "checkpoints"
    newest = root / str(models.checkpoint_steps(root)[-1])
    (newest / digests.DIGEST_FILE).unlink()  # as for a checkpoint saved before digests existed
    target = _largest(newest)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    loaded = models.load(config.model)
    with pytest.raises(digests.CheckpointError, match=rf"{newest}: cannot restore checkpoint step"):
        models.restore_params(loaded.model, root)
