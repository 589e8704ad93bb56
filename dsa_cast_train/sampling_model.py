"""The Gemma 3 the samplers run: last-token prefill logits and no activation remat.

Tunix's sampler computes the prefill's logits for every prompt position, ``[B, prompt, V]``
floats (25 prompts x 192 tokens x 262,144 = 4.7 GiB in float32 for Gemma 3), though it samples
from the last position only. It passes ``decode_only_last_token=True`` to a model whose
``__call__`` accepts it (Tunix's Gemma 4 does; its Gemma 3 does not):
:class:`LastTokenPrefillGemma3` adds it. And a model built with ``model.remat`` rematerialises
in every call, the sampler's decode loop included, where ``nnx.remat`` fails (flax
``TraceContextError``); a sampler keeps no activations for a backward pass anyway.

- :func:`sampling_view` returns a model for a sampler: same parameter arrays, this class,
  no remat (evaluation, SFT's after-training samples);
- :func:`enable_last_token_prefill` switches a live model in place (GRPO, whose rollout must
  see the actor's updates).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flax import nnx
from tunix.models.gemma3 import model as gemma3_lib


class LastTokenPrefillGemma3(gemma3_lib.Gemma3):
    """Tunix ``Gemma3`` whose ``__call__`` accepts ``decode_only_last_token``: the sampler then
    gets ``[B, 1, V]`` logits of the last prompt position at prefill (prompts are left-padded, so
    it is the last real token) instead of ``[B, prompt_len, V]``. Same parameters and results."""

    def __call__(self, last_tokens, positions=None, cache=None, attention_mask=None,
                 output_hidden_states=False, *, images=None, decode_only_last_token=False):
        if not decode_only_last_token or images is not None or output_hidden_states:
            return super().__call__(last_tokens, positions, cache, attention_mask, output_hidden_states,
                                    images=images)
        x = self.embedder.encode(last_tokens)
        new_cache = None if cache is None else {}
        for i, layer in enumerate(self.layers):
            name = f"layer_{i}"
            layer_cache, x = layer(x, positions, cache[name] if cache else None, attention_mask)
            if cache is not None:
                new_cache[name] = layer_cache
        x = self.final_norm(x[:, -1:, :])  # RMSNorm is per position: normalise the last one only
        return self.embedder.decode(x), new_cache


def enable_last_token_prefill(model: Any) -> Any:
    """Give a Tunix ``Gemma3`` instance the last-token prefill, in place.

    Tunix's loaders construct ``Gemma3`` themselves, so the instance's class is switched to
    :class:`LastTokenPrefillGemma3` (which adds no state: parameters, shardings and checkpoints
    are unchanged). Models of any other class are returned untouched. Returns ``model``."""
    if type(model) is gemma3_lib.Gemma3:
        model.__class__ = LastTokenPrefillGemma3
    return model


def sampling_view(model: Any) -> Any:
    """A model for a sampler over ``model``'s parameter arrays (no copy): the last-token
    prefill class and ``remat_config`` NONE. Non-Gemma-3 models are returned as they are.

    The view has its own variables: it does not follow later updates of ``model`` (build it
    after training, or use :func:`enable_last_token_prefill` on a model that keeps training)."""
    if not isinstance(model, gemma3_lib.Gemma3):
        return model
    cfg = model.config
    plain = gemma3_lib.RematConfig.NONE
    if type(model) is LastTokenPrefillGemma3 and cfg.remat_config in (plain, plain.value):
        return model
    view_cfg = dataclasses.replace(cfg, remat_config=plain)
    abstract = nnx.eval_shape(lambda: LastTokenPrefillGemma3(view_cfg, rngs=nnx.Rngs(0)))
    return nnx.merge(nnx.graphdef(abstract), nnx.state(model))
