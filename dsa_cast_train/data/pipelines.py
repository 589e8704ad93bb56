"""grain pipelines: tokenised SFT batches and the string-column GRPO dataset.

grain is imported inside the functions so that ``import dsa_cast_train.data`` stays cheap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsa_cast_train.data.dsa_format import SYSTEM_PROMPT, Example
from dsa_cast_train.data.tokenization import tokenize_with_reason

__all__ = ["SFTStats", "grpo_dataset", "sft_dataset", "tokenize_examples"]


@dataclass(frozen=True)
class SFTStats:
    """What tokenisation did to the examples (written to the run log).

    ``total`` examples in, ``kept`` rows out, of which ``truncated`` were cut;
    ``dropped_too_long`` (policy "drop") and ``dropped_prompt_too_long`` (no room for a response
    token) were left out. Token counts are over the kept rows: ``max_tokens``/``mean_tokens`` of
    real tokens per row and ``loss_tokens`` with loss mask 1 in total.
    """

    total: int
    kept: int
    truncated: int
    dropped_too_long: int
    dropped_prompt_too_long: int
    max_length: int
    max_tokens: int
    mean_tokens: float
    loss_tokens: int

    @property
    def dropped(self) -> int:
        return self.dropped_too_long + self.dropped_prompt_too_long

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "dropped": self.dropped}


def tokenize_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    policy: str = "truncate",
    system_prompt: str = SYSTEM_PROMPT,
    add_bos: bool = True,
) -> tuple[list[dict[str, np.ndarray]], SFTStats]:
    """Tokenise every example (prompt from :meth:`Example.prompt_text`) into batch-ready rows
    ``{"input_tokens" int32, "input_mask" int32 (loss mask), "pad_mask" bool}`` and count what
    happened."""
    rows: list[dict[str, np.ndarray]] = []
    reasons: Counter[str] = Counter()
    lengths: list[int] = []
    loss_tokens = 0
    for ex in examples:
        tok, reason = tokenize_with_reason(
            tokenizer, ex.prompt_text(system_prompt=system_prompt), ex.response,
            max_length=max_length, policy=policy, add_bos=add_bos,
        )
        reasons[reason] += 1
        if tok is None:
            continue
        rows.append({"input_tokens": tok.tokens, "input_mask": tok.loss_mask, "pad_mask": tok.pad_mask})
        lengths.append(tok.prompt_length + tok.response_length)
        loss_tokens += tok.response_length
    stats = SFTStats(
        total=len(examples),
        kept=len(rows),
        truncated=reasons["truncated"],
        dropped_too_long=reasons["dropped_too_long"],
        dropped_prompt_too_long=reasons["dropped_prompt_too_long"],
        max_length=max_length,
        max_tokens=max(lengths, default=0),
        mean_tokens=float(np.mean(lengths)) if lengths else 0.0,
        loss_tokens=loss_tokens,
    )
    return rows, stats


def sft_dataset(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    max_length: int,
    batch_size: int,
    seed: int,
    epochs: int | None = None,
    drop_remainder: bool = True,
    policy: str = "truncate",
    shuffle: bool = True,
    system_prompt: str = SYSTEM_PROMPT,
    add_bos: bool = True,
) -> tuple[Any, SFTStats]:
    """A ``grain.MapDataset`` of batches ``{"input_tokens", "input_mask", "pad_mask"}``, each
    ``[batch_size, max_length]`` (int32, int32, bool), and the tokenisation stats.

    Rows are tokenised once up front. Order: shuffled with ``seed`` (each epoch differently but
    deterministically), repeated ``epochs`` times (None: forever), then batched; batches may span
    an epoch boundary, and with ``drop_remainder`` a short final batch is dropped. ``shuffle=False``
    keeps file order (for evaluation batches).
    """
    import grain  # noqa: PLC0415 - heavy, optional at import time

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1 or None, got {epochs}")
    rows, stats = tokenize_examples(
        examples, tokenizer, max_length=max_length, policy=policy, system_prompt=system_prompt,
        add_bos=add_bos,
    )
    if not rows:
        raise ValueError(f"no example survived tokenisation (max_length={max_length}, policy={policy!r}): {stats}")
    ds = grain.MapDataset.source(rows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if epochs != 1:
        ds = ds.repeat(epochs)
    ds = ds.batch(batch_size=batch_size, drop_remainder=drop_remainder)
    return ds, stats


def grpo_dataset(
    examples: Sequence[Example],
    *,
    batch_size: int,
    seed: int,
    system_prompt: str = SYSTEM_PROMPT,
    prefill: bool = False,
    epochs: int | None = 1,
    shuffle: bool = True,
) -> Any:
    """A ``grain.MapDataset`` of batches ``{"prompts", "question", "answer"}``, each a numpy string
    array of length ``batch_size`` (Tunix needs numpy columns; a short last batch is dropped)."""
    import grain  # noqa: PLC0415 - heavy, optional at import time

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(examples) < batch_size:
        raise ValueError(f"{len(examples)} examples are fewer than one batch of {batch_size}")
    rows = [
        {
            "prompts": ex.prompt_text(system_prompt=system_prompt, prefill=prefill),
            "question": ex.question,
            "answer": ex.answer,
        }
        for ex in examples
    ]
    ds = grain.MapDataset.source(rows)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if epochs != 1:
        ds = ds.repeat(epochs)
    return ds.batch(batch_size=batch_size, drop_remainder=True)
