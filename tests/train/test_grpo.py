"""GRPO on the tiny model: params move, the reference is frozen, every reward component reaches
the logs with the values ``dsa_cast.score.grade`` gives the same completions, ``answer`` arrives,
resume continues the run, and ``--rubric seed`` reproduces the notebook's three functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tunix")
pytestmark = pytest.mark.train

import numpy as np  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

GRPO_OVERRIDES = (
    ("grpo.max_steps", 3),
    ("grpo.batch_size", 2),
    ("grpo.micro_batch_size", 2),
    ("grpo.num_generations", 2),
    ("grpo.max_prompt_length", 256),
    ("grpo.max_new_tokens", 16),
    ("grpo.learning_rate", 1e-2),
    ("grpo.warmup_fraction", 0.0),
    ("grpo.weight_decay", 0.0),  # so any change of the actor comes from the policy gradient
    ("grpo.save_every_steps", 1),
    ("grpo.keep_checkpoints", 4),
    ("grpo.eval_every_steps", 2),  # held-out rollouts before step 1 and after step 2
    ("grpo.eval_prompts", 2),
)


def length_bonus(prompts, completions, **kwargs):
    """An extra reward that varies on a random model's text (the dsa-cast components are all 0
    there), so advantages are non-zero and the policy gradient moves the actor."""
    return [len(c) / 16.0 for c in completions]


class Capture:
    """Wraps the real reward functions, keeping each call's completions and batch columns."""

    def __init__(self):
        self.calls: list[dict] = []

    def wrap(self, fns):
        out = []
        for fn in fns:
            def wrapped(prompts, completions, _fn=fn, **kwargs):
                if _fn is fns[0]:
                    self.calls.append({"prompts": list(prompts), "completions": list(completions),
                                       "kwargs": dict(kwargs)})
                return _fn(prompts=prompts, completions=completions, **kwargs)

            wrapped.__name__ = fn.__name__
            wrapped.component = fn.component
            wrapped.grader = fn.grader  # RewardLogger then reads format/accuracy from its cache
            out.append(wrapped)
        return out


def _flat(model) -> dict[str, np.ndarray]:
    from dsa_cast_train import export

    return {k: np.asarray(v) for k, v in export._flat_params(model).items()}


@pytest.fixture(scope="module")
def grpo_config(tiny_config):
    from dsa_cast_train import config

    return config.apply_overrides(tiny_config, GRPO_OVERRIDES)


@pytest.fixture(scope="module")
def grpo_run(grpo_config, tmp_path_factory):
    """One 3-step GRPO run with the dsa-cast rubric; the cluster and every reward call captured."""
    from dsa_cast import score
    from dsa_cast_train import grpo, models

    mp = pytest.MonkeyPatch()
    capture = Capture()
    clusters = []
    real_build = grpo.build_learner

    def build(**kw):
        learner, cluster = real_build(**kw)
        clusters.append((cluster, kw["actor"], kw["reference"]))
        return learner, cluster

    mp.setattr(grpo, "build_learner", build)
    mp.setattr(grpo, "reward_functions",
               lambda rubric: [*capture.wrap(score.tunix_rewards(rubric)), length_bonus])
    base = _flat(models.load(grpo_config.model).model)
    run_dir = tmp_path_factory.mktemp("grpo") / "run"
    try:
        result = grpo.run(grpo_config, run_dir)
    finally:
        mp.undo()
    return result, clusters[0], capture, base


def test_actor_changes_and_reference_stays_bit_identical(grpo_run):
    result, (cluster, actor, reference), _, base = grpo_run
    assert result.actor_steps == 3 and result.resumed_from == 0
    trained = _flat(cluster.actor_trainer.model)
    ref_after = _flat(cluster.inference_worker.get_model("reference"))
    assert trained.keys() == base.keys() == ref_after.keys()
    assert any(not np.array_equal(trained[k], base[k]) for k in base), "actor params did not move"
    for k in base:
        np.testing.assert_array_equal(ref_after[k], base[k], err_msg=f"reference changed at {k}")
    # the reference is an independent copy, not the actor's buffers
    assert cluster.inference_worker.get_model("reference") is not cluster.actor_trainer.model


def test_checkpoints_tensorboard_summary_and_curve(grpo_run):
    from dsa_cast_train import models

    result, *_ = grpo_run
    run = result.run_dir
    assert models.checkpoint_steps(result.checkpoint_dir) == [1, 2, 3]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert result.reward_curve is not None and result.reward_curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "grpo_summary.json").read_text())
    assert summary["actor_steps"] == 3 and summary["prompts"] == result.prompts > 0
    assert json.loads((run / "config.json").read_text())["grpo"]["max_steps"] == 3


def test_in_training_evaluation_records_held_out_rewards(grpo_run, grpo_config):
    from dsa_cast_train import data, grpo, sft

    result, _, capture, _ = grpo_run
    evals = grpo.read_metrics(result.metrics_path, "eval")
    assert [r["step"] for r in evals] == [0, 2]  # actor steps completed when evaluated
    assert all(r["n"] == 2 * 2 for r in evals)
    eval_calls = [c for c in capture.calls if c["kwargs"]["mode"] == "eval"]
    assert len(eval_calls) == 2
    _, held_out = data.split_examples(sft.load_examples(grpo_config.data, "train"),
                                      eval_fraction=grpo_config.data.eval_fraction, seed=grpo_config.data.split_seed)
    held = {ex.question for ex in held_out}
    assert all(str(q) in held for c in eval_calls for q in c["kwargs"]["question"])
    for rec in evals:  # the total is the sum of the components, per completion and so in the mean
        assert rec["reward_mean"] == pytest.approx(sum(rec["components"].values()))


def test_rewards_receive_answer_aligned_with_prompts(grpo_run, grpo_config):
    from dsa_cast_train import data, sft

    _, _, capture, _ = grpo_run
    train = sft.load_examples(grpo_config.data, "train")
    answer_of = {ex.question: ex.answer for ex in train}
    train_calls = [c for c in capture.calls if c["kwargs"]["mode"] == "train"]
    assert len(train_calls) == 3
    for call in train_calls:
        kw = call["kwargs"]
        assert isinstance(kw["answer"], np.ndarray) and isinstance(kw["question"], np.ndarray)
        n = len(call["completions"])
        assert n == 2 * 2 and len(kw["answer"]) == n
        for prompt, question, answer in zip(call["prompts"], kw["question"], kw["answer"]):
            assert prompt == data.build_prompt(str(question), system_prompt=grpo_config.data.system_prompt)
            assert str(answer) == answer_of[str(question)]
        # generations of one prompt are consecutive rows (p0, p0, p1, p1)
        assert kw["question"][0] == kw["question"][1] and kw["question"][2] == kw["question"][3]


def test_logged_components_equal_grade_on_the_same_completions(grpo_run):
    from dsa_cast import score
    from dsa_cast import parse as dsa_parse
    from dsa_cast_train import grpo

    result, (cluster, *_), capture, _ = grpo_run
    records = grpo.read_metrics(result.metrics_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    fns = score.tunix_rewards("dsa-cast")
    names = {fn.__name__: fn.component for fn in fns}
    tunix_log = cluster._rl_metrics_logger
    for rec, call in zip(records, [c for c in capture.calls if c["kwargs"]["mode"] == "train"]):
        kw = call["kwargs"]
        grades = [score.grade(c, str(a), question=str(q))
                  for c, a, q in zip(call["completions"], kw["answer"], kw["question"])]
        assert set(rec["components"]) == set(names) | {"length_bonus"}
        for name, component in names.items():
            want = float(np.mean([g.components[component] for g in grades]))
            assert rec["components"][name] == pytest.approx(want, abs=1e-12), name
        bonus = length_bonus(None, call["completions"])
        assert rec["components"]["length_bonus"] == pytest.approx(float(np.mean(bonus)))
        assert rec["reward_mean"] == pytest.approx(float(np.mean([g.total for g in grades]) + np.mean(bonus)))
        assert rec["format_adherence"] == float(np.mean([dsa_parse.parse(c).exact_format
                                                         for c in call["completions"]]))
        judged = [g.correct for g in grades if g.correct is not None]
        assert rec["accuracy"] == pytest.approx(float(np.mean(judged)))
        assert rec["n"] == len(grades) == rec["graded_with_reference"]
        assert rec["reward_seconds"] >= 0.0
    # Tunix's own metrics (TensorBoard) carry every component too, with the same per-step means
    for name in [*names, "length_bonus"]:
        history = tunix_log.get_metric_history("rewards", name, "train")
        assert len(history) == 3
        np.testing.assert_allclose(history, [r["components"][name] for r in records], atol=1e-6)
    # rollouts.jsonl: each completion with its own per-component rewards
    rows = [json.loads(line) for line in (result.run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert sum(r["mode"] == "train" for r in rows) == 3 * 4 and sum(r["mode"] == "eval" for r in rows) == 2 * 4
    for row in rows:
        g = score.grade(row["completion"], row["answer"], question=row["question"])
        assert row["rewards"] == pytest.approx({**{n: g.components[c] for n, c in names.items()},
                                                "length_bonus": len(row["completion"]) / 16.0})
        assert row["correct"] == g.correct


def test_resume_continues_from_the_newest_checkpoint(grpo_run, grpo_config, tmp_path):
    """Copy the finished run minus its last checkpoint, raise max_steps, rerun: resumes at 2."""
    import shutil

    from dsa_cast_train import config, grpo, models

    result, *_ = grpo_run
    run = tmp_path / "resumed"
    shutil.copytree(result.run_dir, run)
    shutil.rmtree(run / "checkpoints" / "actor" / "3")
    more = config.apply_overrides(grpo_config, [("grpo.max_steps", 4)])
    res = grpo.run(more, run)
    assert res.resumed_from == 2 and res.actor_steps == 4
    assert models.checkpoint_steps(res.checkpoint_dir)[-1] == 4
    steps = [r["step"] for r in grpo.read_metrics(res.metrics_path)]
    assert steps == [1, 2, 3, 4], "records after the restored step must be redone once, not duplicated"
    with pytest.raises(Exception, match="differ"):
        grpo.run(config.apply_overrides(more, [("grpo.rubric", "seed")]), run)


def test_relative_init_checkpoint_is_resolved(grpo_run, grpo_config, tmp_path, monkeypatch):
    """A relative ``grpo.init_checkpoint`` (orbax wants absolute paths) is resolved against the
    working directory: ``init_actor`` restores the same parameters, and a run starts from it."""
    from dsa_cast_train import config, grpo, models

    result, (cluster, *_), *_ = grpo_run
    monkeypatch.chdir(result.run_dir)
    fresh = models.load(grpo_config.model).model
    root, step = grpo.init_actor(fresh, Path("checkpoints") / "actor")
    assert root == result.checkpoint_dir.resolve() and root.is_absolute() and step == 3
    restored, trained = _flat(fresh), _flat(cluster.actor_trainer.model)
    assert restored.keys() == trained.keys()
    for k in trained:
        np.testing.assert_array_equal(restored[k], trained[k], err_msg=f"restored param {k} differs")

    cfg = config.apply_overrides(grpo_config, [("grpo.max_steps", 1), ("grpo.eval_prompts", 0),
                                               ("grpo.init_checkpoint", "checkpoints/actor")])
    res = grpo.run(cfg, tmp_path / "from-relative")
    assert res.actor_steps == 1
    assert f"actor initialised from {root} (step 3)" in (res.run_dir / "run.log").read_text()


def test_seed_rubric_reproduces_the_notebook_functions(grpo_config, tmp_path, monkeypatch):
    """``--rubric seed`` via the CLI: the logged components equal the notebook's three functions."""
    from dsa_cast import score
    from dsa_cast_train import grpo

    capture = Capture()
    monkeypatch.setattr(grpo, "reward_functions", lambda rubric: capture.wrap(score.tunix_rewards(rubric)))
    cfg_file = tmp_path / "over.json"
    from dsa_cast_train import config

    cfg_file.write_text(json.dumps(config.to_dict(config.apply_overrides(grpo_config, [("grpo.max_steps", 1)]))))
    run = tmp_path / "seed"
    assert grpo.main(["--run-dir", str(run), "--preset", "none", "--config", str(cfg_file), "--rubric", "seed"]) == 0
    (rec,) = grpo.read_metrics(run / "metrics.jsonl")
    (call,) = [c for c in capture.calls if c["kwargs"]["mode"] == "train"]
    notebook = {"seed_format_exact": score.reward_format_exact, "seed_format_soft": score.reward_format_soft,
                "seed_cast": score.reward_cast_math_and_completeness}
    assert set(rec["components"]) == set(notebook)
    for name, fn in notebook.items():
        values = fn(prompts=call["prompts"], completions=call["completions"], answer=call["kwargs"]["answer"])
        assert rec["components"][name] == pytest.approx(float(np.mean(values)), abs=1e-12)
    assert json.loads((run / "config.json").read_text())["grpo"]["rubric"] == "seed"


def _gsm8k_examples(gsm8k_dir, n):
    from dsa_cast_train import data

    return [data.gsm8k_to_dsa(r) for r in data.load_gsm8k(gsm8k_dir, "train", limit=n)]


@pytest.mark.parametrize("prefill", [False, True], ids=["plain", "prefilled"])
def test_reward_logger_records_grade_values_through_tunix_reward_manager(gsm8k_dir, tmp_path, prefill):
    """Non-trivial completions (perfect, wrong answer, broken format, garbage) through Tunix's own
    reward manager and metric-fn call: the record equals ``grade`` on the same texts."""
    from tunix.rl import reward_manager
    from tunix.rl.grpo import grpo_learner as grpo_lib

    from dsa_cast import parse as dsa_parse
    from dsa_cast import score
    from dsa_cast_train import data, grpo

    a, b = _gsm8k_examples(gsm8k_dir, 2)
    prefix = data.REASONING_START + "\n" if prefill else ""
    perfect_a = a.response
    wrong_b = b.response.replace(f"<answer>\n{b.answer}\n</answer>", "<answer>\n123457\n</answer>")
    assert wrong_b != b.response
    broken_a = a.response.replace("Evidence:", "Notes:")
    texts = [perfect_a, broken_a, wrong_b, "no format at all 42"]
    completions = [t[len(prefix):] if prefill and t.startswith(prefix) else t for t in texts]
    questions = np.array([a.question, a.question, b.question, b.question])
    answers = np.array([a.answer, a.answer, b.answer, b.answer])
    prompts = [data.build_prompt(str(q)) for q in questions]

    logger = grpo.RewardLogger(score.tunix_rewards("dsa-cast"), metrics_path=tmp_path / "m.jsonl",
                               rubric="dsa-cast", rollouts_path=tmp_path / "r.jsonl", prefix=prefix,
                               step_fn=lambda: 6, num_generations=2)
    assert logger._grader is not None  # shared BatchGrader: no second grading for the metrics
    manager = reward_manager.SequenceRewardManager(reward_fns=logger.reward_fns,
                                                   algo_config=grpo_lib.GRPOConfig())
    info = manager(prompts=prompts, completions=completions, answer=answers, question=questions, mode="train",
                   trajectory_ids=["0_0", "0_1", "1_0", "1_1"])
    tunix_metrics = logger.metric_fn(prompts=prompts, completions=completions, rewards=info["rewards"],
                                     advantages=np.array([1.0, -1.0, 0.5, -0.5]), answer=answers, question=questions,
                                     trajectory_ids=["0_0", "0_1", "1_0", "1_1"])
    graded_texts = [prefix + c for c in completions] if prefill else completions
    grades = [score.grade(t, str(ans), question=str(q)) for t, ans, q in zip(graded_texts, answers, questions)]
    assert grades[0].correct and grades[0].total > grades[1].total > 0  # the inputs are non-trivial
    (rec,) = grpo.read_metrics(tmp_path / "m.jsonl")
    assert rec["step"] == 7 and rec["mode"] == "train" and rec["n"] == 4
    for fn in score.tunix_rewards("dsa-cast"):
        want = float(np.mean([g.components[fn.component] for g in grades]))
        assert rec["components"][fn.__name__] == pytest.approx(want, abs=1e-12)
        assert float(np.mean(info["log_metrics"][f"rewards/{fn.__name__}"][0])) == pytest.approx(want, abs=1e-12)
    assert rec["reward_mean"] == pytest.approx(float(np.mean([g.total for g in grades])))
    assert rec["reward_max"] == pytest.approx(max(g.total for g in grades))
    pairs = [(grades[0].total, grades[1].total), (grades[2].total, grades[3].total)]
    assert rec["groups"] == 2 and rec["groups_with_signal"] == sum(x != y for x, y in pairs) == 2
    assert rec["reward_group_std_mean"] == pytest.approx(float(np.mean([abs(x - y) / 2 for x, y in pairs])))
    assert rec["advantage_abs_mean"] == pytest.approx(0.75)
    fmt = [dsa_parse.parse(t).exact_format for t in graded_texts]
    assert fmt[0] and not fmt[3]
    assert rec["format_adherence"] == pytest.approx(float(np.mean(fmt)))
    assert rec["accuracy"] == pytest.approx(float(np.mean([g.correct for g in grades])))
    assert tunix_metrics["dsa/accuracy"][0] == rec["accuracy"]
    assert tunix_metrics["dsa/format_adherence"][0] == rec["format_adherence"]
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in rows] == completions
    assert [r["correct"] for r in rows] == [g.correct for g in grades]


def test_records_count_the_groups_that_carry_a_signal(grpo_run):
    """Each training record's group fields agree with its rollouts (2 prompts x 2 generations)."""
    from dsa_cast_train import grpo

    result, *_ = grpo_run
    rows = [json.loads(x) for x in (result.run_dir / "rollouts.jsonl").read_text().splitlines()]
    for rec in grpo.read_metrics(result.metrics_path):
        totals = [sum(r["rewards"].values()) for r in rows if r["step"] == rec["step"] and r["mode"] == "train"]
        want = grpo.group_signal(totals, 2)
        assert rec["groups"] == want["groups"] == 2
        assert rec["groups_with_signal"] == want["groups_with_signal"]
        assert rec["reward_group_std_mean"] == pytest.approx(want["reward_group_std_mean"])
        assert (rec["advantage_abs_mean"] > 0) == (rec["groups_with_signal"] > 0)


@given(st.integers(1, 4).flatmap(lambda size: st.lists(
    st.tuples(*[st.sampled_from([0.0, 0.5, 1.5, 3.5, 10.0])] * size), min_size=1, max_size=6)))
def test_group_signal_invariants(groups):
    """Bounds; zero signal iff every group is constant; the std is 0 exactly then; order inside a
    group does not matter; a batch that is not whole groups gives None."""
    from dsa_cast_train import grpo

    size = len(groups[0])
    flat = [r for g in groups for r in g]
    out = grpo.group_signal(flat, size)
    assert out["groups"] == len(groups)
    assert 0 <= out["groups_with_signal"] <= len(groups)
    assert out["groups_with_signal"] == sum(len(set(g)) > 1 for g in groups)
    assert out["reward_group_std_mean"] >= 0
    assert (out["reward_group_std_mean"] == 0) == (out["groups_with_signal"] == 0)
    flipped = [r for g in groups for r in reversed(g)]
    again = grpo.group_signal(flipped, size)
    assert again["groups_with_signal"] == out["groups_with_signal"]
    assert again["reward_group_std_mean"] == pytest.approx(out["reward_group_std_mean"], rel=1e-12, abs=1e-15)
    if size > 1:
        assert grpo.group_signal(flat[:-1], size)["groups"] is None


def test_reward_curve_and_truncation(tmp_path):
    from dsa_cast_train import grpo

    path = tmp_path / "metrics.jsonl"
    recs = [{"step": s, "mode": m, "reward_mean": float(s), "components": {"x": s / 2},
             "format_adherence": 0.5, "accuracy": None if s == 1 else 0.25}
            for s in (1, 2, 3) for m in ("train", "eval")]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"step": 4, "mode": "tr')  # torn line
    assert [r["step"] for r in grpo.read_metrics(path)] == [1, 2, 3]
    png = grpo.plot_reward_curve(path, tmp_path / "curve.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert grpo.truncate_records(path, 2, redo_eval=False) == 3  # step 3 train + eval, and the torn line
    assert [r["step"] for r in grpo.read_metrics(path, None)] == [1, 1, 2, 2]
    assert grpo.truncate_records(path, 2, redo_eval=False) == 0
    # a resumed learner evaluates at the restored step again: that eval record goes too
    assert grpo.truncate_records(path, 2) == 1
    assert [(r["step"], r["mode"]) for r in grpo.read_metrics(path, None)] == [(1, "train"), (1, "eval"), (2, "train")]
    assert grpo.plot_reward_curve(tmp_path / "missing.jsonl", tmp_path / "none.png") is None


def test_optimizer_schedule_and_rollout_config():
    import optax

    from dsa_cast_train import config, grpo

    g = config.GRPOConfig(max_steps=10, warmup_fraction=0.2, learning_rate=1.0, final_lr_fraction=0.0)
    opt = grpo.make_optimizer(g)
    assert isinstance(opt, optax.GradientTransformation)
    rc = grpo.rollout_config(config.GRPOConfig(), (1, 106))
    assert (rc.max_prompt_length, rc.max_tokens_to_generate, rc.kv_cache_size) == (256, 384, 640)
    assert (rc.temperature, rc.top_k, rc.top_p, rc.eos_tokens, rc.seed) == (0.9, 50, 1.0, [1, 106], 0)
    assert isinstance(rc.seed, int)


def test_prompt_filter_and_batch_checks(tiny_tokenizer):
    from dsa_cast_train import config, data, grpo

    short = data.Example("What is 2+3?", "", "5")
    long = data.Example("How many? " * 200, "", "1")
    kept, dropped = grpo.filter_prompts([short, long], tiny_tokenizer, max_prompt_length=64,
                                        system_prompt="Be brief.", prefill=False)
    assert kept == [short] and dropped == 1
    n = grpo.prompt_length(tiny_tokenizer, "hello")
    assert n == len(tiny_tokenizer.EncodeAsIds("hello")) + 1
    g = config.GRPOConfig(batch_size=3, micro_batch_size=2)
    with pytest.raises(ValueError, match="grpo.micro_batch_size"):
        grpo.build_learner(actor=None, reference=None, tokenizer=None, mesh=None, g=g, eos_ids=(1,),
                           run_dir=Path("."), reward_fns=[])


def test_calc_steps_counts_the_reference_solution_calculator_lines():
    from dsa_cast_train import data, grpo

    record = {"question": "Tom has 3 bags of 4 apples and eats 2. How many are left?",
              "answer": "3 bags of 4 is <<3*4=12>>12 apples. 12 - 2 = <<12-2=10>>10 are left.\n#### 10"}
    example = data.gsm8k_to_dsa(record)
    assert grpo.calc_steps(example) == 2
    assert grpo.calc_steps(data.Example("What is 2+3?", "no evidence", "5")) == 0


def test_reference_init_is_the_init_checkpoint_and_stays_frozen(grpo_run, grpo_config, tmp_path, monkeypatch):
    """``grpo.reference = "init"``: the frozen KL reference is the actor's starting weights (the
    init checkpoint), not the base model, and GRPO leaves it bit-identical."""
    from dsa_cast_train import config, grpo, models

    result, (cluster, *_), _, base = grpo_run
    start = models.load(grpo_config.model).model
    grpo.init_actor(start, result.checkpoint_dir)
    start = _flat(start)
    assert any(not np.array_equal(start[k], base[k]) for k in base), "the checkpoint must differ from base"

    built = []
    real_build = grpo.build_learner

    def build(**kw):
        learner, cl = real_build(**kw)
        built.append(cl)
        return learner, cl

    monkeypatch.setattr(grpo, "build_learner", build)
    monkeypatch.setattr(grpo, "reward_functions", lambda rubric: [length_bonus])
    cfg = config.apply_overrides(grpo_config, [("grpo.max_steps", 1), ("grpo.eval_prompts", 0),
                                               ("grpo.init_checkpoint", str(result.checkpoint_dir)),
                                               ("grpo.reference", "init")])
    res = grpo.run(cfg, tmp_path / "ref-init")
    assert res.actor_steps == 1
    ref = _flat(built[0].inference_worker.get_model("reference"))
    for k in start:
        np.testing.assert_array_equal(ref[k], start[k], err_msg=f"reference is not the init checkpoint at {k}")
    assert "reference initialised from" in (res.run_dir / "run.log").read_text()
    with pytest.raises(config.ConfigError, match="grpo.reference"):
        config.apply_overrides(grpo_config, [("grpo.reference", "sft")])
