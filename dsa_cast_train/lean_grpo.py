"""A memory-lean GRPO for Tunix 0.1.7: log-probabilities without a ``[B, L, V]`` logits array.

Why: Gemma 3 has a 262,144-token vocabulary. Tunix's GRPO loss
(``tunix.rl.algo_core.grpo_loss_fn`` -> ``common.compute_per_token_logps``) runs the model to
full logits ``[B, prompt + completion, V]``, slices the completion positions, takes a
log-softmax and an entropy over them: several vocabulary-sized float32 copies per token, kept
for the backward pass. At 8 generations of 192 + 320 tokens that is ``8 x 512 x 262144 x 4`` B =
4 GiB per copy.

What this module computes instead, for completion token ``t`` of row ``b`` with final-normed
hidden state ``h`` at the position before it, embedding matrix ``E`` (tied, ``[V, D]``),
temperature ``tau`` and target id ``y``::

    z      = h E^T / tau                       (one sequence chunk at a time)
    logp_t = z[y] - logsumexp(z)
    H_t    = logsumexp(z) - sum_v softmax(z)_v z_v     (entropy, logged only)

The hidden states come from the model's own embedder, decoder layers and final norm (each layer
rematerialised in the backward pass), only for the completion positions' predecessors; the
chunks are a ``lax.scan`` whose body is ``jax.checkpoint``-ed, so at most one
``[B, chunk, V]`` block of logits exists at a time, forward or backward. The GRPO objective on
top (ratio, clipping, dual clip, KL, aggregation, the aux values) is Tunix's, term for term, so
the loss and gradients equal Tunix's default loss (``tests/train/test_lean_grpo.py``).

Pieces:

- :func:`hidden_states` / :func:`completion_logps`: the two halves above;
- :func:`lean_grpo_loss`: registered as the Tunix policy loss ``"dsa_cast_lean"``
  (``tunix.rl.function_registry``); select it with :class:`LeanGRPOConfig`;
- :class:`LeanRLCluster`: an ``RLCluster`` whose reference and old-policy log-probabilities use
  the same chunked path (no gradient), and which keeps no extra copy of the actor's weights
  (Tunix's "anchor" snapshot, used only for off-policy log-probabilities this learner never asks
  for when actor and rollout share weights);
- the rollout's prefill computes logits for the last prompt position only
  (:mod:`dsa_cast_train.sampling_model`).

Memory arithmetic and how to choose the chunk size: ``docs/grpo.md``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.rl import algo_core, common, function_registry
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner as grpo_lib

LOSS_NAME = "dsa_cast_lean"
"""Name of :func:`lean_grpo_loss` in Tunix's policy-loss registry."""


@dataclasses.dataclass(kw_only=True)
class LeanGRPOConfig(grpo_lib.GRPOConfig):
    """Tunix ``GRPOConfig`` selecting :func:`lean_grpo_loss`, plus its two knobs."""

    policy_loss_fn: str = LOSS_NAME
    logps_chunk: int = 64
    """Completion positions whose ``[B, chunk, V]`` logits exist at once."""
    remat_layers: bool = True
    """Recompute each decoder layer in the backward pass instead of storing its activations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.logps_chunk < 1:
            raise ValueError(f"logps_chunk must be at least 1, got {self.logps_chunk}")


# --------------------------------------------------------------------------------------------
# log-probabilities
# --------------------------------------------------------------------------------------------


def _layer_forward(layer: Any, x: jax.Array, positions: jax.Array, attention_mask: jax.Array) -> jax.Array:
    return layer(x, positions, None, attention_mask)[1]


_layer_forward_remat = nnx.remat(_layer_forward)


def hidden_states(model: Any, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array, *,
                  remat: bool = False) -> jax.Array:
    """Final-normed hidden states ``[B, L, D]`` of a Tunix Gemma 3: its ``__call__`` without the
    vocabulary projection (text only, no KV cache). With ``remat`` each decoder layer is
    recomputed in the backward pass, so only layer inputs are kept."""
    step = _layer_forward_remat if remat else _layer_forward
    x = model.embedder.encode(tokens)
    for layer in model.layers:
        x = step(layer, x, positions, attention_mask)
    return model.final_norm(x)


def _chunk_logps(h: jax.Array, targets: jax.Array, embedding: jax.Array, temperature: float,
                 with_entropy: bool) -> tuple[jax.Array, jax.Array]:
    """Log-probabilities of ``targets`` ``[B, c]`` (and entropies) from hidden states ``[B, c, D]``,
    rounded exactly as Tunix's ``selective_log_softmax`` (logits in the model's dtype, scaled by
    the temperature, normalised in float32)."""
    logits = jnp.einsum("bcd,vd->bcv", h, embedding)
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    wide = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(wide, axis=-1)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0].astype(jnp.float32)
    logps = target - lse
    if not with_entropy:
        return logps, jnp.zeros_like(logps)
    probs = jnp.exp(wide - lse[..., None])
    return logps, lse - jnp.sum(probs * wide, axis=-1)


def completion_logps(h: jax.Array, targets: jax.Array, embedding: jax.Array, *, temperature: float = 1.0,
                     chunk: int = 64, with_entropy: bool = True) -> tuple[jax.Array, jax.Array]:
    """Per-token log-probabilities and entropies ``([B, T], [B, T])`` of ``targets`` ``[B, T]``
    given the hidden states ``h`` ``[B, T, D]`` that predict them, ``chunk`` positions at a time.

    The chunk function is ``jax.checkpoint``-ed inside a ``lax.scan``: the backward pass
    recomputes each chunk's logits, so one ``[B, chunk, V]`` block exists at a time."""
    b, t, d = h.shape
    chunk = max(1, min(chunk, t))
    n = -(-t // chunk)
    pad = n * chunk - t
    if pad:
        h = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hs = h.reshape(b, n, chunk, d).swapaxes(0, 1)
    ys = targets.reshape(b, n, chunk).swapaxes(0, 1)
    body = jax.checkpoint(functools.partial(_chunk_logps, embedding=embedding, temperature=temperature,
                                            with_entropy=with_entropy))

    def step(carry, xs):
        return carry, body(*xs)

    _, (logps, entropy) = jax.lax.scan(step, None, (hs, ys))
    logps = logps.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
    entropy = entropy.swapaxes(0, 1).reshape(b, n * chunk)[:, :t]
    return logps, entropy


def model_completion_logps(model: Any, prompt_ids: jax.Array, completion_ids: jax.Array, *, pad_id: int,
                           eos_id: int, temperature: float = 1.0, chunk: int = 64, remat: bool = False,
                           with_entropy: bool = True) -> tuple[jax.Array, jax.Array]:
    """Log-probabilities (and entropies) of the completion tokens under ``model``, as Tunix's
    ``common.compute_per_token_logps`` gives them (same positions, masks and temperature), but
    chunked: see :func:`completion_logps`."""
    tokens, positions, attention_mask, _ = common.process_ids(prompt_ids, completion_ids, pad_id, eos_id)
    t = completion_ids.shape[1]
    h = hidden_states(model, tokens, positions, attention_mask, remat=remat)[:, -t - 1:-1]
    embedding = model.embedder.input_embedding.value
    return completion_logps(h, completion_ids, embedding, temperature=temperature, chunk=chunk,
                            with_entropy=with_entropy)


@functools.partial(jax.jit, static_argnames=("pad_id", "eos_id", "temperature", "chunk"))
def _no_grad_logps(graphdef, state, prompt_ids, completion_ids, *, pad_id, eos_id, temperature, chunk):
    model = nnx.merge(graphdef, state)
    logps, _ = model_completion_logps(model, prompt_ids, completion_ids, pad_id=pad_id, eos_id=eos_id,
                                      temperature=temperature, chunk=chunk, with_entropy=False)
    return jax.lax.stop_gradient(logps)


def frozen_completion_logps(model: Any, prompt_ids: jax.Array, completion_ids: jax.Array, *, pad_id: int,
                            eos_id: int, temperature: float, chunk: int) -> jax.Array:
    """:func:`model_completion_logps` without gradient, jitted: reference and old-policy
    log-probabilities ``[B, T]``."""
    graphdef, state = nnx.split(model)
    return _no_grad_logps(graphdef, state, prompt_ids, completion_ids, pad_id=int(pad_id), eos_id=int(eos_id),
                          temperature=float(temperature), chunk=int(chunk))


# --------------------------------------------------------------------------------------------
# the GRPO objective (Tunix's grpo_loss_fn, term for term, on the chunked log-probabilities)
# --------------------------------------------------------------------------------------------


def grpo_objective(per_token_logps: jax.Array, entropy: jax.Array, train_example: Any,
                   algo_config: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped-ratio GRPO loss and Tunix's aux values from per-token log-probabilities.

    With ratio ``r = exp(clip(logp - logp_old, -20, 20))`` and advantage ``A``::

        l_t  = max(-A r, -A clip(r, 1 - eps, 1 + eps_high))     (dual clip min(l_t, -eps_c A) if A < 0)
        loss = aggregate(l_t, mask) + beta * aggregate(KL_t, mask)

    ``aggregate`` is ``algo_config.loss_agg_mode`` (``sequence-mean-token-mean`` by default);
    ``KL_t`` is ``common.compute_kl_divergence`` against the reference log-probabilities. With
    ``num_iterations == 1`` ``logp_old`` is ``stop_gradient(logp)``, so ``r == 1`` and the
    gradient is the policy gradient ``-A grad logp`` per token.
    """
    masked_mean = algo_core.masked_mean
    mode = algo_config.loss_agg_mode
    epsilon = algo_config.epsilon
    epsilon_high = getattr(algo_config, "epsilon_high", epsilon)
    epsilon_c = getattr(algo_config, "epsilon_c", None)
    mask = train_example.completion_mask
    logps = per_token_logps.astype(jnp.float32)
    advantages = jnp.astype(train_example.advantages, jnp.float32)
    if train_example.old_per_token_logps is None:
        old = jax.lax.stop_gradient(logps)
    else:
        old = jnp.astype(train_example.old_per_token_logps, jnp.float32)

    log_ratio = logps - old
    ppo_kl = masked_mean(-log_ratio, mask)
    log_ratio = jnp.clip(log_ratio, max=20.0, min=-20.0)
    if algo_config.loss_algo == "gspo-token":
        seq = (log_ratio * mask).sum(axis=-1) / jnp.clip(mask.sum(-1), min=1)
        log_ratio = logps - jax.lax.stop_gradient(logps) + jax.lax.stop_gradient(seq)[:, None]
        log_ratio = jnp.clip(log_ratio, max=10.0)
    ratio = jnp.exp(log_ratio)
    adv = advantages if advantages.ndim == 2 else advantages[:, None]

    pg_loss_1 = -adv * ratio
    pg_loss_2 = -adv * jnp.clip(ratio, 1 - epsilon, 1 + epsilon_high)
    per_token_loss = jnp.maximum(pg_loss_1, pg_loss_2).astype(jnp.float32)
    clipped_fraction = masked_mean(jnp.greater(pg_loss_2, pg_loss_1), mask)
    pg_loss_3 = -epsilon_c * adv if epsilon_c is not None else per_token_loss
    clipfrac_lower = common.aggregate_loss(((per_token_loss > pg_loss_3) & (adv < 0.0)).astype(jnp.float32),
                                           mask, mode)
    per_token_loss = jnp.where(adv < 0.0, jnp.minimum(pg_loss_3, per_token_loss), per_token_loss)
    weights = getattr(train_example, "sampler_is_weights", None)
    if weights is not None:
        per_token_loss = per_token_loss * weights.astype(jnp.float32)
    loss = common.aggregate_loss(per_token_loss, mask, mode)

    adv_full = jnp.broadcast_to(adv, mask.shape)
    on = mask > 0
    aux = {
        "kl": 0.0,
        "kl_loss": 0.0,
        "pg_loss": loss,
        "pg_clipfrac": clipped_fraction,
        "ppo_kl": ppo_kl,
        "pg_clipfrac_lower": clipfrac_lower,
        "is_ratio/mean": masked_mean(ratio, mask),
        "is_ratio/max": jnp.max(jnp.where(on, ratio, 0.0)),
        "is_ratio/min": jnp.min(jnp.where(on, ratio, jnp.inf)),
        "log_ratio/abs_mean": masked_mean(jnp.abs(log_ratio), mask),
        "pg_loss/unclipped_mean": masked_mean(pg_loss_1, mask),
        "pg_loss/clipped_mean": masked_mean(pg_loss_2, mask),
        "advantage/abs_mean": masked_mean(jnp.abs(adv_full), mask),
        "advantage/max": jnp.max(jnp.where(on, adv_full, -jnp.inf)),
        "advantage/min": jnp.min(jnp.where(on, adv_full, jnp.inf)),
        "advantage/nonzero_frac": masked_mean((jnp.abs(adv_full) > 1e-8).astype(jnp.float32), mask),
    }
    if weights is not None:
        w = weights.astype(jnp.float32)
        aux["sampler_is/weight_mean"] = masked_mean(w, mask)
        aux["sampler_is/weight_min"] = jnp.min(jnp.where(on, w, jnp.inf))
    else:
        aux["sampler_is/weight_mean"] = jnp.float32(1.0)
        aux["sampler_is/weight_min"] = jnp.float32(1.0)
    if train_example.ref_per_token_logps is not None:
        kl = common.compute_kl_divergence(logps, train_example.ref_per_token_logps, algo_config.kl_loss_mode,
                                          clamp_value=algo_config.kl_clamp_value)
        aux["kl"] = jnp.astype((kl * mask).sum() / jnp.clip(mask.sum(), min=1), jnp.float32)
        kl_loss = common.aggregate_loss(kl, mask, mode)
        aux["kl_loss"] = kl_loss
        if algo_config.beta is not None and algo_config.beta != 0.0:
            loss = loss + algo_config.beta * kl_loss
    aux["entropy"] = common.aggregate_loss(entropy, mask, mode)
    return loss, aux


@function_registry.register_policy_loss_fn(LOSS_NAME)
def lean_grpo_loss(model: Any, train_example: Any, algo_config: Any, pad_id: int, eos_id: int,
                   **kwargs: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Tunix policy loss ``"dsa_cast_lean"``: :func:`grpo_objective` on chunked log-probabilities
    (:func:`model_completion_logps` with ``algo_config.logps_chunk`` / ``remat_layers``)."""
    logps, entropy = model_completion_logps(
        model, train_example.prompt_ids, train_example.completion_ids, pad_id=pad_id, eos_id=eos_id,
        temperature=getattr(algo_config, "temperature", 1.0), chunk=getattr(algo_config, "logps_chunk", 64),
        remat=getattr(algo_config, "remat_layers", True))
    return grpo_objective(logps, entropy, train_example, algo_config)


# --------------------------------------------------------------------------------------------
# cluster: chunked reference / old-policy log-probabilities, no anchor copy
# --------------------------------------------------------------------------------------------


class LeanRLCluster(rl_cluster_lib.RLCluster):
    """``RLCluster`` for one mesh where actor and rollout share weights (``should_sync_weights``
    is False), with the chunked log-probability path for the reference and the old policy.

    - Tunix snapshots the actor's full state into ``_anchor_policy_state`` (a host copy of every
      parameter, 1 GiB for Gemma 3 270M in float32) for ``get_actor_per_token_logps``, which the
      GRPO learner never calls; the snapshot is dropped here.
    - ``get_old_per_token_logps`` (``num_iterations > 1``) reads the live actor, which is the
      policy that sampled the batch when it is called (before the batch's updates), and applies
      the rollout temperature as the policy loss does (Tunix 0.1.7's vanilla rollout omits it,
      so its first-iteration ratio is not 1 at ``temperature != 1``).
    """

    def __init__(self, *args: Any, logps_chunk: int = 64, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logps_chunk = int(logps_chunk)
        self._anchor_policy_state = None

    def _train_temperature(self) -> float:
        return float(self.get_rollout_config(mode=rl_cluster_lib.Mode.TRAIN).temperature)

    def _micro_batched(self, model: Any, prompt_tokens: jax.Array, completion_tokens: jax.Array,
                       micro_batch_size: int | None) -> jax.Array:
        n = prompt_tokens.shape[0]
        if n == 0:
            raise ValueError("Cannot compute log probabilities of an empty batch.")
        step = micro_batch_size or n
        pad_id, eos_id = self.rollout.pad_id(), self.rollout.eos_id()
        outs = [frozen_completion_logps(model, prompt_tokens[i:i + step], completion_tokens[i:i + step],
                                        pad_id=pad_id, eos_id=eos_id, temperature=self._train_temperature(),
                                        chunk=self.logps_chunk)
                for i in range(0, n, step)]
        return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)

    def get_ref_per_token_logps(self, prompt_tokens, completion_tokens, pad_id, eos_id, micro_batch_size=None):
        return self._micro_batched(self.inference_worker.get_model("reference"), prompt_tokens,
                                   completion_tokens, micro_batch_size)

    def get_old_per_token_logps(self, prompt_tokens, completion_tokens, micro_batch_size=None):
        return self._micro_batched(self.actor_trainer.model, prompt_tokens, completion_tokens, micro_batch_size)
