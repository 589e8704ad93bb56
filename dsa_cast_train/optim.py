"""The one optimizer of both trainers: linear warm-up, cosine decay, global-norm clip, AdamW.

SFT (:func:`dsa_cast_train.sft.build_optimizer`) and GRPO (:func:`dsa_cast_train.grpo.make_optimizer`)
both call :func:`build` with their config section (``[sft]`` or ``[grpo]``: ``learning_rate``,
``max_steps``, ``warmup_fraction``, ``final_lr_fraction``, ``b1``, ``b2``, ``eps`` when the section has
one, ``weight_decay``, ``grad_clip_norm``).

Schedule (``optax.warmup_cosine_decay_schedule``), with peak learning rate ``P``, end value
``E = P x final_lr_fraction``, ``N = max_steps`` optimizer updates and ``W`` warm-up steps
(:func:`warmup_steps`), evaluated at the optimizer's update count ``t`` (0 for the first update)::

    lr(t) = P x t / W                                            for 0 <= t < W
    lr(t) = E + (P - E) x (1 + cos(pi x (t - W) / (D - W))) / 2  for W <= t <= D,  D = max(N, W + 1)

so ``lr(0) = 0`` when ``W > 0`` (``lr(0) = P`` when ``W = 0``), ``lr(W) = P`` and ``lr(N) = E``; the
last update (``t = N - 1``) runs just above ``E``. A step is one optimizer update: Tunix's gradient
accumulation (``optax.MultiSteps``) advances the schedule once per update, not per micro-batch.

Warm-up rule: ``W = min(floor(warmup_fraction x N + 1/2), max(N - 1, 0))``, i.e. the fraction of
the steps rounded half up, capped so at least one update comes after the warm-up. (Before this
module SFT used Python's ``round`` (half to even) with the cap, and GRPO truncated with ``int``
and had no cap; on every shipped preset all three rules give the same ``W``.) Half up, unlike
``int``, also keeps a product that floating point puts just under a whole number
(``0.29 x 100 = 28.999...``) at that number.

The clip comes first: ``chain(clip_by_global_norm(grad_clip_norm), adamw(schedule, ...))``; a
``grad_clip_norm`` of 0 leaves the clip out (only SFT allows 0). AdamW's weight decay is
decoupled and applies to every parameter.

Importing this module does not import optax (or JAX); the builders do.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_EPS = 1e-8
"""Adam epsilon for a config section without ``eps`` (``[grpo]``): optax's default."""


def warmup_steps(warmup_fraction: float, max_steps: int) -> int:
    """``W = min(floor(warmup_fraction x max_steps + 1/2), max(max_steps - 1, 0))`` (see the module doc)."""
    if max_steps <= 0:
        return 0
    return min(max(math.floor(warmup_fraction * max_steps + 0.5), 0), max_steps - 1)


def learning_rate_schedule(peak: float, max_steps: int, warmup_fraction: float, final_fraction: float):
    """Linear warm-up from 0 over :func:`warmup_steps` updates, then cosine to ``peak x
    final_fraction`` at ``max_steps`` (an ``optax.Schedule``: update count -> learning rate)."""
    import optax

    warmup = warmup_steps(warmup_fraction, max_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(max_steps, warmup + 1), end_value=peak * final_fraction)


def build(cfg: Any):
    """``chain(clip_by_global_norm, adamw)`` on :func:`learning_rate_schedule` from a config
    section (:class:`~dsa_cast_train.config.SFTConfig` or :class:`~dsa_cast_train.config.GRPOConfig`)."""
    import optax

    schedule = schedule_of(cfg)
    adamw = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=getattr(cfg, "eps", DEFAULT_EPS),
                        weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), adamw)
    return adamw


def schedule_of(cfg: Any):
    """The learning-rate schedule :func:`build` uses for a config section."""
    return learning_rate_schedule(cfg.learning_rate, cfg.max_steps, cfg.warmup_fraction, cfg.final_lr_fraction)
