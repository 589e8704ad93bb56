"""Where the trainers' examples come from: one place for SFT, GRPO and evaluation.

:func:`load_examples` reads a split of the configured source, :func:`train_and_held_out` splits
the training items exactly as SFT does (so GRPO never trains on SFT's held-out items),
:func:`data_source` describes what was read (for reports and manifests) and
:func:`system_prompt` is the instruction every prompt is built with.

Importing this module pulls in :mod:`dsa_cast_train.data` (numpy only), never JAX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsa_cast_train import config as config_lib
from dsa_cast_train import data
from dsa_cast_train.data.gsm8k import file_sha256

__all__ = ["data_source", "load_examples", "system_prompt", "train_and_held_out"]


def load_examples(cfg: config_lib.DataConfig, split: str = "train", *, limit: int | None = None) -> list:
    """DSA examples for ``split`` (``train`` or ``test``) from the configured source.

    GSM8K records are converted with ``data.gsm8k_to_dsa``. For ``dsa-jsonl``, ``test`` is
    ``data.test_path`` when set; otherwise ``data.path`` is split with ``data.eval_fraction``
    and ``data.split_seed`` and ``train``/``test`` are the two disjoint parts. ``limit`` (else
    ``data.limit`` for ``train``) keeps the first items. The extra CSV joins ``train`` only.
    """
    if cfg.source == "gsm8k":
        path = cfg.path if cfg.path else data.default_gsm8k_dir()  # $DSA_CAST_GSM8K, else embedded
        n = limit if limit is not None else (cfg.limit if split == "train" else None)
        records = data.load_gsm8k(path, split, limit=n, source=cfg.gsm8k_loader)
        examples = [data.gsm8k_to_dsa(r) for r in records]
    else:
        if not cfg.path:
            raise FileNotFoundError("data.source is 'dsa-jsonl' but data.path is not set")
        everything = data.load_dsa_jsonl(cfg.path).examples
        if cfg.test_path:
            train, test = everything, data.load_dsa_jsonl(cfg.test_path).examples
        else:  # hold out a fixed share, so training never sees the test items
            train, test = data.split_examples(everything, eval_fraction=cfg.eval_fraction, seed=cfg.split_seed)
        examples = test if split == "test" else train
        n = limit if limit is not None else (cfg.limit if split == "train" else None)
        if n is not None:
            examples = examples[:n]
    if split == "train" and cfg.extra_csv:
        examples = [*examples, *data.load_extra_csv(cfg.extra_csv)]
    return examples


def train_and_held_out(cfg: config_lib.DataConfig) -> tuple[list[Any], list[Any]]:
    """``(train, held-out)``: the ``train`` split (:func:`load_examples`) cut by
    ``data.split_examples`` with ``data.eval_fraction`` and ``data.split_seed``. SFT evaluates its
    loss on the held-out part; GRPO trains on the same train part, so neither trains on it."""
    examples = load_examples(cfg, "train")
    return data.split_examples(examples, eval_fraction=cfg.eval_fraction, seed=cfg.split_seed)


def data_source(cfg: config_lib.DataConfig, splits: Sequence[str] = ("train", "test")) -> dict[str, Any]:
    """What :func:`load_examples` reads for ``splits``, for reports and manifests: ``{"name",
    "kind"`` (``embedded``, ``local``, ``hf``, ``tfds``), ``"location", "sha256"`` (split -> digest
    of the file read)}``."""
    if cfg.source == "gsm8k":
        path = cfg.path if cfg.path else data.default_gsm8k_dir()
        src = data.describe_gsm8k_source(path, tuple(splits), source=cfg.gsm8k_loader)
        return {"name": "GSM8K", **src.as_dict()}
    files = {"train": cfg.path, "test": cfg.test_path or cfg.path}
    return {"name": "DSA JSONL", "kind": "local", "location": str(cfg.path),
            "sha256": {split: file_sha256(files[split]) for split in splits if files.get(split)}}


def system_prompt(cfg: config_lib.DataConfig) -> str:
    """The configured instruction, or the data module's default."""
    return data.SYSTEM_PROMPT if cfg.system_prompt is None else cfg.system_prompt
