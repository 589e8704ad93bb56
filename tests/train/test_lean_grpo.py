"""The lean GRPO loss equals Tunix's default loss: value, gradients and aux values, for temperature 1
and != 1, beta 0 and > 0, padded and unpadded completions, with and without old-policy
log-probabilities, chunks that do not divide the completion length; its cluster's reference and
old-policy log-probabilities equal Tunix's; the last-token prefill samples the same tokens; a
whole GRPO run with ``grpo.loss = lean`` moves the actor as ``grpo.loss = tunix`` does."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("tunix")
pytestmark = pytest.mark.train

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

PAD, EOS, VOCAB = 0, 1, 97


@pytest.fixture(scope="module")
def small_model():
    from tunix.models.gemma3 import model as gemma3_lib

    cfg = gemma3_lib.ModelConfig(num_layers=2, num_embed=VOCAB, embed_dim=32, hidden_dim=64, num_heads=2,
                                 head_dim=16, num_kv_heads=1, sliding_window_size=16, param_dtype=jnp.float32)
    return gemma3_lib.Gemma3(cfg, rngs=nnx.Rngs(0))


def _example(*, padded: bool, beta: float, with_old: bool, seed: int = 0, b: int = 4, p: int = 7, t: int = 11):
    from tunix.rl import common

    rng = np.random.default_rng(seed)
    prompt = rng.integers(4, VOCAB, (b, p))
    prompt[0, :3] = PAD  # left padding of the prompts
    prompt[2, :1] = PAD
    completion = rng.integers(4, VOCAB, (b, t))
    if padded:  # right padding after an early stop; one row stops after its first token
        completion[1, 6:] = PAD
        completion[3, 1:] = PAD
    adv = rng.normal(size=b).astype(np.float32)
    ref = (rng.normal(size=(b, t)) * 0.1 - 4).astype(np.float32)
    old = (rng.normal(size=(b, t)) * 0.1 - 4).astype(np.float32)
    return common.TrainExample(
        prompt_ids=jnp.array(prompt), prompt_mask=jnp.array(prompt != PAD), completion_ids=jnp.array(completion),
        completion_mask=jnp.array(completion != PAD), advantages=jnp.array(adv),
        ref_per_token_logps=jnp.array(ref) if beta else None, old_per_token_logps=jnp.array(old) if with_old else None)


def _loss_and_grads(model, fn, example, cfg):
    (loss, aux), grads = nnx.value_and_grad(lambda m: fn(m, example, cfg, PAD, EOS), has_aux=True)(model)
    return float(loss), {k: float(v) for k, v in aux.items()}, jax.tree.leaves(grads)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("beta", [0.0, 0.08])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("with_old", [False, True])
def test_lean_loss_equals_tunix_loss(small_model, temperature, beta, padded, with_old):
    from tunix.rl import algo_core
    from tunix.rl.grpo import grpo_learner as grpo_lib

    from dsa_cast_train import lean_grpo

    example = _example(padded=padded, beta=beta, with_old=with_old)
    tunix_cfg = grpo_lib.GRPOConfig(num_generations=2, beta=beta)
    lean_cfg = lean_grpo.LeanGRPOConfig(num_generations=2, beta=beta, logps_chunk=4)  # 4 does not divide 11
    tunix_cfg.temperature = lean_cfg.temperature = temperature  # as GRPOLearner sets it
    loss_t, aux_t, grads_t = _loss_and_grads(small_model, algo_core.grpo_loss_fn, example, tunix_cfg)
    loss_l, aux_l, grads_l = _loss_and_grads(small_model, lean_grpo.lean_grpo_loss, example, lean_cfg)

    assert loss_l == pytest.approx(loss_t, rel=1e-5, abs=1e-6)
    assert sorted(aux_l) == sorted(aux_t)
    for key in aux_t:
        assert aux_l[key] == pytest.approx(aux_t[key], rel=1e-4, abs=1e-5), key
    scale = max(float(jnp.max(jnp.abs(g))) for g in grads_t)
    assert scale > 0
    for g_t, g_l in zip(grads_t, grads_l):
        assert g_t.shape == g_l.shape
        np.testing.assert_allclose(np.asarray(g_l), np.asarray(g_t), atol=1e-5 * scale, rtol=1e-4)
    if beta:
        assert aux_t["kl"] != 0.0  # the KL path really ran


@pytest.mark.parametrize("chunk", [1, 3, 11, 64])
@pytest.mark.parametrize("remat", [False, True])
def test_chunked_logps_match_tunix(small_model, chunk, remat):
    from tunix.rl import common

    from dsa_cast_train import lean_grpo

    ex = _example(padded=True, beta=0.0, with_old=False, seed=3)
    graphdef, state = nnx.split(small_model)
    want = common.compute_per_token_logps(graphdef, state, ex.prompt_ids, ex.completion_ids, PAD, EOS,
                                          temperature=0.9)
    got, entropy = lean_grpo.model_completion_logps(small_model, ex.prompt_ids, ex.completion_ids, pad_id=PAD,
                                                    eos_id=EOS, temperature=0.9, chunk=chunk, remat=remat)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    assert got.shape == entropy.shape == ex.completion_ids.shape
    ent = np.asarray(entropy)
    assert np.all(ent >= -1e-5) and np.all(ent <= np.log(VOCAB) + 1e-4)  # 0 <= H <= log V
    frozen = lean_grpo.frozen_completion_logps(small_model, ex.prompt_ids, ex.completion_ids, pad_id=PAD,
                                               eos_id=EOS, temperature=0.9, chunk=chunk)
    np.testing.assert_allclose(np.asarray(frozen), np.asarray(want), atol=2e-5)


def test_last_token_prefill_samples_the_same_tokens(tiny_loaded):
    from tunix.generate import sampler as sampler_lib

    from dsa_cast_train import sampling_model

    model, tok, cfg = tiny_loaded.model, tiny_loaded.tokenizer, tiny_loaded.model_config
    cache = sampler_lib.CacheConfig(cache_size=96, num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
                                    head_dim=cfg.head_dim)
    prompts = ["<start_of_turn>user\nWhat is 3 + 4?<end_of_turn>\n<start_of_turn>model\n", "Plan: add"]

    def sample():
        s = sampler_lib.Sampler(model, tok, cache)
        out = s(prompts, max_generation_steps=24, max_prompt_length=48, temperature=0.0, echo=False)
        return s, out.tokens

    plain_sampler, plain = sample()
    assert not plain_sampler._supports_decode_only_last_token
    sampling_model.enable_last_token_prefill(model)
    assert isinstance(model, sampling_model.LastTokenPrefillGemma3)
    lean_sampler, lean = sample()
    assert lean_sampler._supports_decode_only_last_token  # the sampler now asks for last-token logits
    assert [list(map(int, a)) for a in lean] == [list(map(int, a)) for a in plain]
    # the full forward pass is unchanged
    tokens = jnp.array([[2, 5, 6, 7]])
    pos = jnp.arange(4)[None]
    mask = jnp.tril(jnp.ones((1, 4, 4), dtype=bool))
    full, _ = model(tokens, pos, None, mask)
    last, _ = model(tokens, pos, None, mask, decode_only_last_token=True)
    np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(full[:, -1]), atol=1e-5)


def test_sampling_view_of_a_remat_model_samples_like_the_plain_model(tiny_config):
    """A model built with ``model.remat = block`` cannot run Tunix's decode loop; its sampling
    view (same arrays, no remat, last-token prefill) samples exactly what the plain model does."""
    from dsa_cast_train import evaluate, models, sampling_model

    plain = models.load(tiny_config.model)
    remat = models.load(dataclasses.replace(tiny_config.model, remat="block"))
    view = sampling_model.sampling_view(remat.model)
    assert isinstance(view, sampling_model.LastTokenPrefillGemma3)
    assert view.embedder.input_embedding.value is remat.model.embedder.input_embedding.value  # no copy
    prompts = ["<start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n"]
    want = evaluate.generate(plain, prompts, max_new_tokens=12, max_prompt_length=48, batch_size=1)
    got = evaluate.generate(remat, prompts, max_new_tokens=12, max_prompt_length=48, batch_size=1)
    assert got == want


def test_lean_cluster_reference_logps_and_no_anchor(tiny_config, tmp_path):
    """LeanRLCluster: the reference log-probabilities equal Tunix's; no anchor copy is kept."""
    from tunix.rl import common

    from dsa_cast_train import grpo, models

    g = dataclasses.replace(tiny_config.grpo, beta=0.05, max_new_tokens=8, max_prompt_length=64,
                            num_generations=2, batch_size=2, micro_batch_size=2, temperature=0.8)
    mesh = models.make_mesh(1, 1)
    loaded = models.load(tiny_config.model, mesh)
    reference = grpo.copy_model(loaded.model)
    fn = grpo.reward_functions("dsa-cast")
    _, cluster = grpo.build_learner(actor=loaded.model, reference=reference, tokenizer=loaded.tokenizer,
                                    mesh=mesh, g=g, eos_ids=loaded.eos_ids, run_dir=tmp_path, reward_fns=fn)
    assert cluster._anchor_policy_state is None
    ex = _example(padded=True, beta=0.0, with_old=False, seed=5)
    prompt = jnp.clip(ex.prompt_ids, 0, loaded.tokenizer.GetPieceSize() - 1)
    completion = jnp.clip(ex.completion_ids, 0, loaded.tokenizer.GetPieceSize() - 1)
    got = cluster.get_ref_per_token_logps(prompt, completion, loaded.pad_id, loaded.eos_ids[0], micro_batch_size=2)
    graphdef, state = nnx.split(cluster.inference_worker.get_model("reference"))
    want = common.compute_per_token_logps(graphdef, state, prompt, completion, loaded.pad_id, loaded.eos_ids[0],
                                          temperature=0.8)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
    old = cluster.get_old_per_token_logps(prompt, completion, micro_batch_size=4)
    graphdef, state = nnx.split(cluster.actor_trainer.model)
    want_old = common.compute_per_token_logps(graphdef, state, prompt, completion, loaded.pad_id,
                                              loaded.eos_ids[0], temperature=0.8)
    np.testing.assert_allclose(np.asarray(old), np.asarray(want_old), atol=2e-5)


def _length_bonus(prompts, completions, **kwargs):
    """A reward that varies on a random model's text, so advantages are non-zero."""
    return [len(c) / 16.0 for c in completions]


def test_lean_and_tunix_runs_train_the_same_actor(tiny_config, tmp_path, monkeypatch):
    """Two GRPO steps from the same weights and seed: the lean run's actor equals the Tunix-loss
    run's (same rollouts, same rewards, equal gradients), and it differs from the start."""
    from dsa_cast import score

    from dsa_cast_train import config as config_lib
    from dsa_cast_train import grpo, models

    monkeypatch.setattr(grpo, "reward_functions", lambda rubric: [*score.tunix_rewards(rubric), _length_bonus])

    overrides = (("grpo.max_steps", 2), ("grpo.batch_size", 2), ("grpo.micro_batch_size", 2),
                 ("grpo.num_generations", 2), ("grpo.max_new_tokens", 12), ("grpo.max_prompt_length", 256),
                 ("grpo.learning_rate", 1e-2), ("grpo.warmup_fraction", 0.0), ("grpo.weight_decay", 0.0),
                 ("grpo.beta", 0.05), ("grpo.save_every_steps", 2), ("grpo.eval_prompts", 0),
                 ("grpo.rubric", "format"))
    states = {}
    for loss in ("tunix", "lean"):
        cfg = config_lib.apply_overrides(tiny_config, (*overrides, ("grpo.loss", loss)))
        result = grpo.run(cfg, tmp_path / loss)
        assert result.actor_steps == 2
        model = models.load(cfg.model).model
        models.restore_params(model, result.checkpoint_dir)
        states[loss] = jax.tree.leaves(nnx.state(model, nnx.Param))
    start = jax.tree.leaves(nnx.state(models.load(tiny_config.model).model, nnx.Param))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(states["lean"], start))
    assert moved > 1e-4
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(states["lean"], states["tunix"]))
    assert diff < 1e-3 * moved


def test_xla_flags_apply_adds_the_scheduler_flag_once_and_respects_the_user():
    from dsa_cast_train import xla_flags

    env: dict[str, str] = {}
    assert xla_flags.apply(env) == "--xla_cpu_enable_concurrency_optimized_scheduler=false"
    assert xla_flags.apply(env) == env["XLA_FLAGS"]  # idempotent
    assert env["XLA_FLAGS"].count("concurrency_optimized_scheduler") == 1
    user = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2 "
                         "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    xla_flags.apply(user)
    assert user["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                         "--xla_cpu_enable_concurrency_optimized_scheduler=true"]
    import os

    import dsa_cast_train  # noqa: F401  (importing the package applies it to this process)

    assert "--xla_cpu_enable_concurrency_optimized_scheduler" in os.environ["XLA_FLAGS"]


def test_progress_printer_pools_evaluation_batches_and_reports_pace(caplog):
    import logging

    from dsa_cast_train import grpo

    ticks = iter([0.0, 40.0, 80.0])
    printer = grpo.ProgressPrinter(4, clock=lambda: next(ticks))

    def rec(mode, step, n=2, reward=1.0, acc=0.5):
        return {"mode": mode, "step": step, "n": n, "reward_mean": reward, "format_adherence": 1.0,
                "accuracy": acc, "graded_with_reference": n, "components": {"dsa_cast_format": 1.0},
                "groups": 1, "groups_with_signal": 1}

    with caplog.at_level(logging.INFO, logger="dsa_cast_train.grpo"):
        for batch in range(4):  # four held-out batches of one evaluation: one pooled line
            printer(rec("eval", 0, reward=float(batch)))
        printer(rec("train", 1))
        printer(rec("train", 2))
        printer(rec("train", 3))
        printer(rec("eval", 3, n=4, acc=1.0))
        printer.flush()
        printer.flush()  # nothing waiting: no second line
    lines = [r.getMessage() for r in caplog.records]
    evals = [line for line in lines if line.startswith("[eval]")]
    assert evals == ["[eval] after 0 actor steps, 8 held-out completions: reward 1.500, format 1.00, accuracy 0.50",
                     "[eval] after 3 actor steps, 4 held-out completions: reward 1.000, format 1.00, accuracy 1.00"]
    trains = [line for line in lines if line.startswith("[train]")]
    assert len(trains) == 3 and "s/step" not in trains[0]
    assert "40 s/step, ~80 s left" in trains[2]  # 2 steps in 80 s; steps 3 and 4 to go
    assert lines.index(evals[0]) < lines.index(trains[0])


def test_malloc_tuning_respects_the_user_and_is_accepted_by_glibc():
    import platform

    from dsa_cast_train import malloc

    assert malloc.planned({}) == {"arena_max": 2, "mmap_threshold": 1 << 20}
    assert malloc.planned({"MALLOC_ARENA_MAX": "8"}) == {"mmap_threshold": 1 << 20}
    assert malloc.planned({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) == {"arena_max": 2}
    assert malloc.planned({"DSA_CAST_MALLOC_TUNING": "0"}) == {}
    assert malloc.apply({"DSA_CAST_MALLOC_TUNING": "0"}) == {}
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert malloc.apply({}) == {"arena_max": 2, "mmap_threshold": 1 << 20}
