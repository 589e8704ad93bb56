"""dsa_cast_train.optim: the one warm-up/cosine + clip + AdamW builder of SFT and GRPO (pure optax)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax
import pytest

from dsa_cast_train import config, grpo, optim, sft


@pytest.mark.parametrize(("fraction", "steps", "want"), [
    (0.1, 30, 3), (0.05, 300, 15), (0.1, 1500, 150), (0.04, 200, 8), (0.0, 44, 0),
    (0.1, 25, 3),     # 2.5 rounds half up (Python's round would give 2)
    (0.29, 100, 29),  # 28.999... in floating point: int() would give 28
    (0.1, 3, 0), (0.5, 3, 2), (1.0, 10, 9),  # capped at max_steps - 1
    (0.5, 1, 0), (0.3, 0, 0),
])
def test_warmup_steps_rounds_half_up_and_leaves_one_update(fraction, steps, want):
    assert optim.warmup_steps(fraction, steps) == want


def test_schedule_start_end_of_warmup_and_end():
    peak, n, w, final = 2.0, 100, 10, 0.1
    s = optim.learning_rate_schedule(peak, n, w / n, final)
    assert float(s(0)) == 0.0
    assert float(s(w // 2)) == pytest.approx(peak / 2)
    assert float(s(w)) == pytest.approx(peak)
    mid = w + (n - w) // 2  # half way through the cosine: the mean of peak and end
    assert float(s(mid)) == pytest.approx((peak + peak * final) / 2, rel=1e-5)
    assert float(s(n)) == pytest.approx(peak * final)
    t = n - 1  # the last update's rate, from the formula in the module doc
    want = peak * final + (peak - peak * final) * (1 + math.cos(math.pi * (t - w) / (n - w))) / 2
    assert float(s(t)) == pytest.approx(want, rel=1e-5)
    values = [float(s(i)) for i in range(w, n + 1)]
    assert all(a >= b - 1e-7 for a, b in zip(values, values[1:], strict=False))


def test_no_warmup_starts_at_peak():
    s = optim.learning_rate_schedule(1.0, 10, 0.0, 0.0)
    assert float(s(0)) == pytest.approx(1.0) and float(s(10)) == pytest.approx(0.0)


def _updates(opt, grads, param: float = 1.0) -> list[float]:
    params = {"w": jnp.array([param])}
    state = opt.init(params)
    out = []
    for grad in grads:
        update, state = opt.update({"w": jnp.array([grad])}, state, params)
        out.append(float(update["w"][0]))
    return out


def _first_update(opt, grad: float) -> float:
    return _updates(opt, [grad])[0]


def test_clip_is_applied_before_adamw():
    g = config.GRPOConfig(max_steps=10, warmup_fraction=0.0, learning_rate=1.0, final_lr_fraction=0.0,
                          grad_clip_norm=0.5, weight_decay=0.0)
    opt = optim.build(g)
    clip_then_adamw = optax.chain(optax.clip_by_global_norm(0.5),
                                  optax.adamw(optim.schedule_of(g), b1=g.b1, b2=g.b2, weight_decay=0.0))
    adamw_alone = optax.adamw(optim.schedule_of(g), b1=g.b1, b2=g.b2, weight_decay=0.0)
    grads = [100.0, 1.0]  # Adam normalises one step away; the second step shows the clipped history
    assert _updates(opt, grads) == pytest.approx(_updates(clip_then_adamw, grads))
    assert _updates(opt, grads)[1] != pytest.approx(_updates(adamw_alone, grads)[1], rel=1e-3)
    assert _first_update(opt, 100.0) == pytest.approx(-1.0, rel=1e-4)  # lr(0) = peak at W = 0; Adam step 1 = -lr


def test_zero_clip_norm_leaves_the_clip_out():
    s = config.SFTConfig(max_steps=10, warmup_fraction=0.0, grad_clip_norm=0.0, weight_decay=0.0)
    adamw_alone = optax.adamw(optim.schedule_of(s), b1=s.b1, b2=s.b2, eps=s.eps, weight_decay=0.0)
    assert _updates(optim.build(s), [100.0, 1.0]) == pytest.approx(_updates(adamw_alone, [100.0, 1.0]))


def test_sft_and_grpo_use_the_same_builder():
    s = config.SFTConfig(max_steps=50, warmup_fraction=0.25, learning_rate=1.0, final_lr_fraction=0.0)
    g = config.GRPOConfig(max_steps=50, warmup_fraction=0.25, learning_rate=1.0, final_lr_fraction=0.0)
    for step in (0, 6, 12, 13, 30, 50):  # W = floor(12.5 + 0.5) = 13 for both
        assert float(sft.learning_rate_schedule(1.0, 50, 0.25, 0.0)(step)) == float(optim.schedule_of(g)(step))
        assert float(optim.schedule_of(s)(step)) == float(optim.schedule_of(g)(step))
    assert float(optim.schedule_of(g)(13)) == pytest.approx(1.0)
    for module_builder, section in ((sft.build_optimizer, s), (grpo.make_optimizer, g)):
        assert _first_update(module_builder(section), 3.0) == pytest.approx(_first_update(optim.build(section), 3.0))
