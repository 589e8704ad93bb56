"""Tokenisation of (prompt, response) pairs with an exact loss-mask boundary.

The prompt and the response are tokenised separately and concatenated, so the boundary between
them is a token boundary by construction (re-tokenising the joined string can merge tokens across
it). The loss mask is 1 on the response tokens, ``<end_of_turn>`` included, and 0 on BOS, prompt and
padding. Padding is described by an explicit ``pad_mask``; nothing is inferred from token id 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsa_cast_train.data.dsa_format import END_OF_TURN

__all__ = ["POLICIES", "TokenizedExample", "tokenize_example", "tokenize_with_reason"]

POLICIES = ("truncate", "drop")


@dataclass(frozen=True)
class TokenizedExample:
    """One training row of length ``max_length``.

    ``tokens`` int32 ids (padding holds the tokenizer's pad id), ``loss_mask`` int32 (1 on response
    tokens), ``pad_mask`` bool (True on real tokens, False on padding), ``truncated`` whether the
    response was cut to fit; ``prompt_length``/``response_length`` count the real tokens kept (BOS is
    part of the prompt).
    """

    tokens: np.ndarray
    loss_mask: np.ndarray
    pad_mask: np.ndarray
    truncated: bool
    prompt_length: int = 0
    response_length: int = 0


def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added, for SentencePiece, HF or duck-typed
    tokenizers (``encode(text) -> list[int]``)."""
    if hasattr(tokenizer, "EncodeAsIds"):  # sentencepiece.SentencePieceProcessor: no BOS/EOS by default
        return [int(i) for i in tokenizer.EncodeAsIds(text)]
    if hasattr(tokenizer, "bos_token_id") and not callable(getattr(tokenizer, "bos_id", None)):
        return [int(i) for i in tokenizer.encode(text, add_special_tokens=False)]  # HF tokenizer
    return [int(i) for i in tokenizer.encode(text)]


def _special_id(tokenizer: Any, name: str) -> int | None:
    """``bos``/``pad`` id from ``tokenizer.{name}_id()`` or HF's ``{name}_token_id``; None if unset."""
    method = getattr(tokenizer, f"{name}_id", None)
    value = method() if callable(method) else getattr(tokenizer, f"{name}_token_id", None)
    return None if value is None or int(value) < 0 else int(value)


def tokenize_with_reason(
    tokenizer: Any,
    prompt: str,
    response: str,
    *,
    max_length: int,
    policy: str = "truncate",
    add_bos: bool = True,
    pad_id: int | None = None,
) -> tuple[TokenizedExample | None, str]:
    """Like :func:`tokenize_example`, also saying what happened: "ok", "truncated",
    "dropped_too_long" (policy "drop") or "dropped_prompt_too_long" (no room for any response token)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not response.endswith(END_OF_TURN):
        response = response + END_OF_TURN
    prompt_ids = _encode(tokenizer, prompt)
    if add_bos:
        bos = _special_id(tokenizer, "bos")
        if bos is None:
            raise ValueError("add_bos=True but the tokenizer defines no BOS id; pass add_bos=False")
        prompt_ids = [bos] + prompt_ids
    response_ids = _encode(tokenizer, response)
    if pad_id is None:
        pad_id = _special_id(tokenizer, "pad")
        if pad_id is None:
            raise ValueError("the tokenizer defines no pad id (SentencePiece pad_id=-1); pass pad_id=")

    truncated = False
    if len(prompt_ids) + len(response_ids) > max_length:
        if policy == "drop":
            return None, "dropped_too_long"
        room = max_length - len(prompt_ids)
        if room < 1:
            return None, "dropped_prompt_too_long"
        response_ids = response_ids[:room]
        truncated = True

    n_prompt, n_response = len(prompt_ids), len(response_ids)
    n = n_prompt + n_response
    tokens = np.full((max_length,), pad_id, dtype=np.int32)
    tokens[:n] = prompt_ids + response_ids
    loss_mask = np.zeros((max_length,), dtype=np.int32)
    loss_mask[n_prompt:n] = 1
    pad_mask = np.zeros((max_length,), dtype=bool)
    pad_mask[:n] = True
    example = TokenizedExample(tokens, loss_mask, pad_mask, truncated, n_prompt, n_response)
    return example, "truncated" if truncated else "ok"


def tokenize_example(
    tokenizer: Any,
    prompt: str,
    response: str,
    *,
    max_length: int,
    policy: str = "truncate",
    add_bos: bool = True,
    pad_id: int | None = None,
) -> TokenizedExample | None:
    """Tokenise ``prompt`` and ``response`` separately and concatenate them into one row.

    ``<end_of_turn>`` is appended to the response unless it already ends with it. With ``add_bos``
    the tokenizer's BOS id (Gemma: 2) starts the prompt; the encoder itself adds no special tokens.
    Rows longer than ``max_length``: policy "truncate" cuts the response end (``truncated=True``),
    "drop" returns None; a prompt that leaves no room for a response token returns None under both
    policies. ``pad_id`` defaults to the tokenizer's pad id.
    """
    return tokenize_with_reason(
        tokenizer, prompt, response, max_length=max_length, policy=policy, add_bos=add_bos, pad_id=pad_id
    )[0]
