"""SFT on the tiny model: learning, checkpoints, resume after a kill, 4-device sharding, run dirs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dsa_cast_train import config as cfg
from dsa_cast_train import runs

REPO = Path(__file__).resolve().parents[2]


def _params(model) -> list[np.ndarray]:
    import jax

    from flax import nnx

    return [np.array(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _with(config, **sections):
    """``config`` with fields replaced per section: _with(c, sft={"max_steps": 3})."""
    return cfg.apply_overrides(config, [(f"{s}.{k}", v) for s, kv in sections.items() for k, v in kv.items()])


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


# ---------------------------------------------------------------------------- run directories (no JAX)


def test_run_dir_rules(tmp_path):
    c = cfg.load_preset("tiny")
    with runs.prepare(tmp_path / "a", "sft", c) as fresh:
        assert not fresh.resumed
        assert json.loads(fresh.config_file.read_text()) == cfg.to_dict(c)
        assert json.loads((fresh.path / runs.MARKER).read_text())["stage"] == "sft"
    # same stage, same model/data: resume; an allowed change keeps the old config beside
    changed = _with(c, sft={"max_steps": 99})
    with runs.prepare(tmp_path / "a", "sft", changed) as again:
        assert again.resumed
    assert json.loads((fresh.path / "config.prev-1.json").read_text())["sft"]["max_steps"] == c.sft.max_steps
    assert json.loads(fresh.config_file.read_text())["sft"]["max_steps"] == 99
    # a changed model or data field blocks resuming and names the field
    with pytest.raises(runs.RunDirError, match=r"model\.seed: 0 -> 5.*--overwrite"):
        runs.prepare(tmp_path / "a", "sft", _with(c, model={"seed": 5}))
    # another stage, or a non-resumable one, needs --overwrite
    with pytest.raises(runs.RunDirError, match="a run of another stage"):
        runs.prepare(tmp_path / "a", "evaluate", c)
    with pytest.raises(runs.RunDirError, match="pass --overwrite"):
        runs.prepare(tmp_path / "a", "sft", c, resumable=False)
    (fresh.path / "checkpoints").mkdir()
    with runs.prepare(tmp_path / "a", "evaluate", c, overwrite=True) as reset:
        assert not reset.resumed
        assert sorted(p.name for p in reset.path.iterdir()) == [runs.LOCK_FILE, "config.json", "run.json"]


_HOLDER = """
import sys, time
from dsa_cast_train import config, runs
with runs.prepare(sys.argv[1], "sft", config.load_preset("tiny")):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_a_locked_dir_is_refused_with_the_holders_pid(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        c = cfg.load_preset("tiny")
        for overwrite in (False, True):
            with pytest.raises(runs.RunDirError, match=rf"in use by another run \(pid {holder.pid} on .*sft started"):
                runs.prepare(tmp_path / "run", "sft", c, overwrite=overwrite)
        assert (tmp_path / "run" / runs.MARKER).is_file()  # the holder's run was not touched
    finally:
        holder.kill()
        holder.wait()
    with runs.prepare(tmp_path / "run", "sft", c) as again:  # a killed holder leaves no stale lock
        assert again.resumed


def test_foreign_dir_is_never_deleted(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    c = cfg.load_preset("tiny")
    with pytest.raises(runs.RunDirError, match="files not made by dsa_cast_train.*precious.txt"):
        runs.prepare(tmp_path, "sft", c)
    with pytest.raises(runs.RunDirError, match="refusing to delete"):
        runs.prepare(tmp_path, "sft", c, overwrite=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]  # not even a lock file added
    (tmp_path / "file").write_text("")
    with pytest.raises(runs.RunDirError, match="not a directory"):
        runs.prepare(tmp_path / "file", "sft", c)


def test_metrics_writer_appends_and_reader_skips_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    with runs.MetricsWriter(path) as w:
        w.write({"step": 1, "loss": np.float32(2.5)})
    with runs.MetricsWriter(path) as w:
        w.write({"step": 2, "loss": 1.5})
    with path.open("a") as fh:
        fh.write('{"step": 3, "lo')
    got = runs.read_metrics(path)
    assert [r["step"] for r in got] == [1, 2] and got[0]["loss"] == 2.5 and "time" in got[0]


def test_learning_rate_schedule_shape():
    from dsa_cast_train import sft

    s = sft.learning_rate_schedule(1.0, 100, 0.1, 0.1)
    assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0)
    assert float(s(100)) == pytest.approx(0.1)
    values = [float(s(i)) for i in range(10, 101)]
    assert all(a >= b - 1e-7 for a, b in zip(values, values[1:]))  # non-increasing after warm-up


def test_tunix_private_hooks_exist_on_the_pinned_tunix():
    from tunix.sft import peft_trainer

    from dsa_cast_train import sft

    sft.check_tunix_private_hooks()  # google-tunix 0.1.7 has every private name the override uses
    assert sft._trainer_class(10).__mro__[1] is peft_trainer.PeftTrainer

    class Renamed(peft_trainer.PeftTrainer):  # a Tunix whose progress-bar hook changed shape
        _tqdm_train_metrics = ("loss",)

    with pytest.raises(RuntimeError, match=r"_tqdm_train_metrics is no longer a property.*google-tunix==0\.1\.7"):
        sft.check_tunix_private_hooks(Renamed)

    class Bare:
        def __init__(self):
            self._train_steps = 0

    with pytest.raises(RuntimeError, match=r"Bare has no _tqdm_train_metrics"):
        sft.check_tunix_private_hooks(Bare)

    class NoBuffer:
        _write_train_metrics = None

        @property
        def _tqdm_train_metrics(self):
            return ["loss"]

        def __init__(self):
            self._train_steps = 0

    with pytest.raises(RuntimeError, match=r"no longer sets self\._prev_buffered_train_metrics"):
        sft.check_tunix_private_hooks(NoBuffer)


# ---------------------------------------------------------------------------- training


@pytest.mark.train
def test_repeated_batch_loss_decreases_params_change_and_restore_is_exact(tiny_config, tmp_path):
    from dsa_cast_train import data, models, sft

    loaded = models.load(tiny_config.model)
    examples = [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(tiny_config.data.path, "train", limit=2)]
    ds, _ = data.sft_dataset(examples, loaded.tokenizer, max_length=128, batch_size=2, seed=0,
                             epochs=1, system_prompt=tiny_config.data.system_prompt)
    batch = ds[0]
    scfg = dataclasses.replace(tiny_config.sft, max_steps=8, warmup_fraction=0.0, final_lr_fraction=1.0,
                               eval_every_steps=100, save_every_steps=8)
    before = _params(loaded.model)
    trainer = sft.make_trainer(loaded.model, scfg, tmp_path / "ckpt")
    trainer.train([batch] * 8, None)
    losses = trainer.metrics_logger.get_metric_history("", "loss", "train")
    assert trainer.train_steps == 8 and len(losses) == 8
    assert losses[-1] < losses[0] - 0.5, losses
    after = _params(loaded.model)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert models.checkpoint_steps(tmp_path / "ckpt") == [8]
    assert (tmp_path / "ckpt" / "8" / "model_params").is_dir()
    assert (tmp_path / "ckpt" / "8" / "optimizer_state").is_dir()

    fresh = models.load(dataclasses.replace(tiny_config.model, seed=1))
    assert any(not np.array_equal(a, b) for a, b in zip(_params(fresh.model), after))
    assert models.restore_params(fresh.model, tmp_path / "ckpt") == 8
    for a, b in zip(_params(fresh.model), after):
        np.testing.assert_array_equal(a, b)
    other = models.load(dataclasses.replace(tiny_config.model, seed=2))
    assert models.restore_params(other.model, tmp_path / "ckpt" / "8") == 8  # a step dir works too
    for a, b in zip(_params(other.model), after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.train
def test_gradient_accumulation_counts_updates_not_micro_batches(tiny_config, tmp_path):
    from dsa_cast_train import data, models, sft

    loaded = models.load(tiny_config.model)
    examples = [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(tiny_config.data.path, "train", limit=8)]
    ds, _ = data.sft_dataset(examples, loaded.tokenizer, max_length=96, batch_size=2, seed=0, epochs=1,
                             system_prompt=tiny_config.data.system_prompt)
    scfg = dataclasses.replace(tiny_config.sft, max_steps=2, grad_accumulation_steps=2, eval_every_steps=100,
                               save_every_steps=2)
    before = _params(loaded.model)
    trainer = sft.make_trainer(loaded.model, scfg, tmp_path / "ckpt")
    trainer.train([ds[i] for i in range(4)], None)
    assert (trainer.train_steps, trainer.iter_steps) == (2, 4)
    assert len(trainer.metrics_logger.get_metric_history("", "loss", "train")) == 2
    assert any(not np.array_equal(a, b) for a, b in zip(before, _params(loaded.model)))
    assert models.checkpoint_steps(tmp_path / "ckpt") == [2]


@pytest.mark.train
def test_run_writes_a_complete_run_dir(trained_run):
    config, result = trained_run
    run_dir = Path(result.run_dir)
    assert (result.start_step, result.final_step, result.resumed) == (0, 6, False)
    assert len(result.train_losses) == 6 and all(np.isfinite(result.train_losses))
    assert [s for s, _ in result.eval_losses] == [0, 3, 6]
    assert result.eval_losses[-1][1] < result.eval_losses[0][1]
    # config, checkpoints (keep 2 of every 3 steps), TensorBoard, data stats, result
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_dict(config)
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    stats = json.loads((run_dir / "data_stats.json").read_text())["train"]
    assert stats["total"] == result.train_examples and stats["kept"] + stats["dropped"] == stats["total"]
    assert stats["truncated"] > 0  # max_length 256 cuts most responses; the log says how many
    assert f"{stats['truncated']} truncated" in (run_dir / "run.log").read_text()
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["final_step"] == 6 and saved["train_losses"] == list(result.train_losses)
    # metrics JSONL: one train line per update (loss, lr, tokens/s) and one per eval pass
    metrics = runs.read_metrics(run_dir / "metrics.jsonl")
    train = [m for m in metrics if m["split"] == "train"]
    assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in train] == list(result.train_losses)
    assert all(m["tokens"] > 0 and m["tokens_per_second"] > 0 for m in train)
    assert sum(m["tokens"] for m in train) == result.tokens and result.tokens_per_second > 0
    assert train[0]["learning_rate"] == 0.0 and max(m["learning_rate"] for m in train) <= 3e-3 * (1 + 1e-6)
    assert [(m["step"], m["loss"]) for m in metrics if m["split"] == "eval"] == list(result.eval_losses)
    # graded samples
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    assert len(lines) == config.sft.num_samples == len(result.samples)
    sample = json.loads(lines[0])
    assert sample["prompt"].endswith("<start_of_turn>model\n") and "Answer in the DSA format." in sample["prompt"]
    assert set(sample["grade"]) >= {"total", "components", "correct", "predicted", "issues", "max_total"}
    assert sample["grade"]["total"] == pytest.approx(sum(sample["grade"]["components"].values()))


@pytest.mark.train
def test_rerun_resumes_and_refuses_changed_model(trained_run, tmp_path):
    from dsa_cast_train import sft

    config, first = trained_run
    again = sft.run(config, first.run_dir)
    assert again.resumed and (again.start_step, again.final_step) == (6, 6) and again.train_losses == ()
    with pytest.raises(runs.RunDirError, match=r"model\.seed"):
        sft.run(_with(config, model={"seed": 9}), first.run_dir)


@pytest.mark.train
def test_killed_run_resumes_to_max_steps(tiny_config, tmp_path):
    """SIGKILL right after the step-4 checkpoint is committed, with step 5 done and recorded; the
    second start resumes at 4, and every (split, step) record appears once (issue 10)."""
    from dsa_cast_train import models, sft

    config = _with(tiny_config, sft={"max_steps": 8, "save_every_steps": 2, "keep_checkpoints": 5,
                                     "eval_every_steps": 100, "num_samples": 0})
    (tmp_path / "config.json").write_text(cfg.to_json(config))
    run_dir = tmp_path / "run"
    script = tmp_path / "killer.py"
    script.write_text(textwrap.dedent("""
        import json, os, signal, sys, time
        from dsa_cast_train import config, models, sft

        c = config.from_dict(json.load(open(sys.argv[1])))
        root = sys.argv[2] + "/checkpoints"

        def on_step(step, loss):
            if step == 5:  # step 4 was recorded, then saved; wait for that save's commit
                deadline = time.time() + 120
                while 4 not in models.checkpoint_steps(root) and time.time() < deadline:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)

        sft.run(c, sys.argv[2], on_step=on_step)
        print("NOT KILLED")
    """))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "config.json"), str(run_dir)],
                          capture_output=True, text=True, timeout=300, env=_subprocess_env())
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-4000:]
    steps = models.checkpoint_steps(run_dir / "checkpoints")
    assert 4 in steps and max(steps) == 4
    assert not (run_dir / "result.json").exists()

    result = sft.run(config, run_dir)
    assert result.resumed and result.start_step == 4 and result.final_step == 8
    assert len(result.train_losses) == 4
    assert models.checkpoint_steps(run_dir / "checkpoints")[-1] == 8
    records = runs.read_metrics(run_dir / "metrics.jsonl")
    assert [m["step"] for m in records if m["split"] == "train"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [m["step"] for m in records if m["split"] == "eval"] == [0, 4]  # before training, at the resume
    assert all(m["step"] != 5 or m["loss"] in result.train_losses for m in records)  # step 5 is the redone one
    assert "resuming SFT" in (run_dir / "run.log").read_text()


@pytest.mark.train
def test_sharded_sft_on_four_cpu_devices(tiny_config, tmp_path):
    """fsdp=2 x tp=2 on 4 simulated CPU devices: SFT runs, params and inputs are really sharded."""
    config = _with(tiny_config, mesh={"fsdp": 2, "tp": 2},
                   sft={"max_steps": 2, "micro_batch_size": 4, "eval_every_steps": 100, "num_samples": 0,
                        "save_every_steps": 2})
    (tmp_path / "config.json").write_text(cfg.to_json(config))
    script = tmp_path / "sharded.py"
    script.write_text(textwrap.dedent("""
        import json, sys
        import jax, numpy as np
        from flax import nnx
        from dsa_cast_train import config, models, sft

        c = config.from_dict(json.load(open(sys.argv[1])))
        result = sft.run(c, sys.argv[2])
        mesh = models.make_mesh(c.mesh.fsdp, c.mesh.tp)
        loaded = models.load(c.model, mesh)
        step = models.restore_params(loaded.model, sys.argv[2] + "/checkpoints")
        emb = loaded.model.embedder.input_embedding.value
        try:
            models.load(c.model, models.make_mesh(1, 4))
            tp4 = "no error"
        except ValueError as exc:
            tp4 = str(exc)
        print(json.dumps({
            "devices": jax.device_count(), "mesh": dict(mesh.shape), "step": step,
            "final_step": result.final_step, "losses": list(result.train_losses),
            "emb_spec": [str(a) for a in emb.sharding.spec], "emb_devices": len(emb.sharding.device_set),
            "emb_shards": len(emb.addressable_shards), "shard_shape": list(emb.addressable_shards[0].data.shape),
            "tp4": tp4}))
    """))
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "config.json"), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
        env=_subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4 and out["mesh"] == {"fsdp": 2, "tp": 2}
    assert out["final_step"] == 2 and out["step"] == 2
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))
    assert out["emb_spec"] == ["tp", "fsdp"] and out["emb_devices"] == 4 and out["emb_shards"] == 4
    assert out["shard_shape"] == [512 // 2, 64 // 2]
    assert "cannot shard the model on mesh" in out["tp4"] and "mesh.tp" in out["tp4"]
