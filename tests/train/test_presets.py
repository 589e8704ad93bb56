"""Hardware presets (demo-cpu, demo-gpu), the hardware default, and the demo report helpers:
per-stage peak memory, per-section presence and coherence in evaluations, the SFT loss curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import config as cfg
from dsa_cast_train import evaluate, memory


# ---------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", ["demo-cpu", "demo-gpu"])
def test_demo_presets_use_the_pypi_gemma(name):
    c = cfg.load_preset(name)
    assert c.name == name
    assert c.model.source == "gemma3-270m-pypi" and c.model.variant == "gemma3-270m"
    assert c.model.dtype == "float32"
    assert c.data.overlength == "drop"  # short items whole, never cut mid-answer
    assert c.grpo.num_generations >= 2  # GRPO needs a group
    assert c.stages == ("sft", "grpo", "evaluate", "export")


def test_demo_cpu_is_sized_for_a_small_cpu():
    c = cfg.load_preset("demo-cpu")
    assert c.mesh.fsdp is None and c.mesh.tp is None  # one device on a CPU host; all of them elsewhere
    assert c.data.max_length <= 384
    assert c.sft.micro_batch_size * c.sft.grad_accumulation_steps * c.sft.max_steps <= 128
    assert c.eval.num_items <= 16 and c.eval.vote_k == 0 and c.eval.max_new_tokens <= 384
    # one prompt x 2 generations per step: a group of 4 peaked at 20.3 GB RSS (the preset's notes)
    assert c.grpo.max_steps <= 16 and c.grpo.batch_size == 1 and c.grpo.num_generations == 2
    # room to finish an answer (cut before </answer>: 15 of 24 rollouts at 224 new tokens, 4 of 8 at 256)
    assert 256 < c.grpo.max_new_tokens <= c.eval.max_new_tokens
    assert c.grpo.max_steps % c.grpo.save_every_steps == 0  # the final step is saved for export
    assert c.export.format == "safetensors"
    assert c.data.system_prompt and len(c.data.system_prompt) < 250  # the short instruction


def test_demo_gpu_is_larger_than_demo_cpu():
    cpu, gpu = cfg.load_preset("demo-cpu"), cfg.load_preset("demo-gpu")
    assert gpu.mesh.fsdp is None and gpu.mesh.tp is None  # derived from the devices
    assert gpu.data.max_length > cpu.data.max_length
    assert gpu.sft.max_steps > cpu.sft.max_steps and gpu.eval.num_items > cpu.eval.num_items
    assert gpu.grpo.max_steps > cpu.grpo.max_steps


@pytest.mark.parametrize(("platform", "preset"), [
    ("cpu", "demo-cpu"), ("gpu", "demo-gpu"), ("cuda", "demo-gpu"), ("ROCM", "demo-gpu"),
    ("tpu", "demo-gpu"), ("METAL", "demo-cpu")])
def test_default_preset_by_platform(platform, preset):
    assert cfg.default_preset(platform) == preset
    assert preset in cfg.preset_names()


def test_default_preset_here_is_the_cpu_one():
    import jax

    assert cfg.default_preset() == cfg.HARDWARE_PRESETS[jax.default_backend()]


def test_auto_preset_resolves_in_config_from_args():
    import argparse

    parser = argparse.ArgumentParser()
    cfg.add_config_arguments(parser, default_preset=cfg.AUTO_PRESET)
    args = parser.parse_args([])
    assert args.preset == cfg.AUTO_PRESET
    assert cfg.config_from_args(args).name == cfg.default_preset()
    args = parser.parse_args(["--preset", "tiny"])
    assert cfg.config_from_args(args).name == "tiny"


# ---------------------------------------------------------------------------- memory


def test_peak_tracker_sees_an_allocation_and_resets_per_stage():
    import numpy as np

    size = 200 * memory.MIB
    with memory.PeakTracker() as big:
        block = np.ones(size // 8)
        block[::4096] = 2.0  # touch every page
        del block
    with memory.PeakTracker() as small:
        np.ones(16)
    assert big.result is not None and small.result is not None
    assert big.result.peak_bytes >= size
    assert big.result.per_stage == small.result.per_stage == memory.reset_peak()
    if small.result.per_stage:  # Linux: the second stage does not inherit the first one's peak
        assert small.result.peak_bytes < big.result.peak_bytes - size // 2
    d = big.result.as_dict()
    assert set(d) == {"peak_rss_mib", "peak_rss_per_stage"} and d["peak_rss_mib"] >= 200


def test_process_peak_and_current_rss_are_positive():
    assert memory.process_peak_bytes() > 0
    current = memory.current_rss_bytes()
    assert current is None or current > 0


def test_measure_without_reset_reports_the_process_peak():
    m = memory.measure(False)
    assert m.per_stage is False and m.peak_bytes == memory.process_peak_bytes()


# ---------------------------------------------------------------------------- evaluation sections


@pytest.fixture(scope="module")
def converted(gsm8k_dir):
    from dsa_cast_train import data

    return [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(gsm8k_dir, "train", limit=4)]


def _grade(example, completion):
    from dsa_cast import numbers

    return evaluate.grade_completion(completion, example.answer, example.question, rubric="dsa-cast",
                                     tolerance=0.1, reference=numbers.extract_reference(example.answer))


def test_reference_response_has_every_section_and_coherence(converted):
    for ex in converted:
        g = _grade(ex, ex.response)
        assert g["sections_present"] == ["Plan", "Reasoning", "Evidence", "Sanity_check"]
        assert g["answer_block"] is True
        assert g["coherence"] is not None and 0.0 < g["coherence"] <= 1.0


def test_echo_has_no_sections(converted):
    g = _grade(converted[0], "Solve the math problem.\n\n" + converted[0].question)
    assert g["sections_present"] == [] and g["answer_block"] is False
    assert g["coherence"] is None or g["coherence"] == 0.0


def test_section_presence_and_report_rows(converted):
    ex = converted[0]
    cut = ex.response.split("Evidence:")[0]  # Plan and Reasoning only, no answer block
    graded = [_grade(ex, ex.response), _grade(ex, cut)]
    presence = evaluate.section_presence(graded)
    assert presence == {"Plan": 1.0, "Reasoning": 1.0, "Evidence": 0.5, "Sanity_check": 0.5,
                        "answer_block": 0.5}
    metrics = evaluate.pass_metrics(graded)
    assert metrics["section_presence"] == presence
    assert 0.0 <= metrics["coherence"] <= 1.0
    summary = evaluate.summarize([{"greedy": g} for g in graded], vote_k=0)
    rows = dict(evaluate.report_rows([summary]))
    assert rows["section:Evidence"] == [0.5] and rows["section:answer_block"] == [0.5]
    assert rows["coherence"] == [summary["coherence"]]


@given(st.lists(st.tuples(st.sets(st.sampled_from(["Plan", "Reasoning", "Evidence", "Sanity_check"])),
                          st.booleans()), min_size=1, max_size=12))
def test_section_presence_is_a_share(rows):
    graded = [{"sections_present": sorted(s), "answer_block": a} for s, a in rows]
    presence = evaluate.section_presence(graded)
    assert list(presence) == ["Plan", "Reasoning", "Evidence", "Sanity_check", "answer_block"]
    for name, share in presence.items():
        expected = sum((a if name == "answer_block" else name in s) for s, a in rows) / len(rows)
        assert share == pytest.approx(expected) and 0.0 <= share <= 1.0


def test_pass_metrics_without_coherence_is_none():
    g = {"completion": "", "total": 0.0, "max_total": 1.0, "components": {}, "correct": False,
         "approx_correct": False, "predicted": None, "exact_format": False, "claims_checked": 0,
         "claims_true": 0, "sections_present": [], "answer_block": False, "coherence": None, "issues": []}
    assert evaluate.pass_metrics([g])["coherence"] is None


# ---------------------------------------------------------------------------- SFT loss curve


def test_loss_curve_png(tmp_path: Path):
    from dsa_cast_train import sft

    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": 0, "split": "eval", "loss": 2.0})]
    lines += [json.dumps({"step": i, "split": "train", "loss": 2.0 / i}) for i in range(1, 6)]
    metrics.write_text("\n".join(lines) + "\n{\"step\": 6, \"spl", encoding="utf-8")  # a cut last line
    out = sft.write_loss_curve(metrics, tmp_path / "loss.png", title="t")
    assert out == tmp_path / "loss.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))


def test_loss_curve_needs_train_records(tmp_path: Path):
    from dsa_cast_train import sft

    assert sft.write_loss_curve(tmp_path / "absent.jsonl", tmp_path / "a.png") is None
    only_eval = tmp_path / "m.jsonl"
    only_eval.write_text(json.dumps({"step": 0, "split": "eval", "loss": 1.0}) + "\n", encoding="utf-8")
    assert sft.write_loss_curve(only_eval, tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()


def test_release_returns_freed_memory():
    import numpy as np

    before = memory.current_rss_bytes()
    block = np.ones(100 * memory.MIB // 8)
    block[::512] = 2.0
    del block
    after = memory.release()
    if before is None:  # no /proc: nothing to compare
        assert after is None
    else:
        assert after is not None and after < before + 50 * memory.MIB
