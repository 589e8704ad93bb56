"""Shared fixtures for the trainer tests: tiny configs, the embedded GSM8K, a trained tiny run.

XLA compilation dominates the tiny model's run time, so a persistent JAX compile cache
under ``<repo>/.cache/jax`` (gitignored) is switched on here, for this process and for the
subprocesses the tests start (they inherit the environment).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GSM8K_DIR = REPO / "dsa_cast_train" / "assets" / "gsm8k"
"""The GSM8K copy shipped in the package: the default source, so the configs below set no path."""
CACHE_DIR = REPO / ".cache" / "jax"

_CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": str(CACHE_DIR),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def _enable_compile_cache() -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for key, value in _CACHE_ENV.items():
        os.environ.setdefault(key, value)
    import sys

    if "jax" in sys.modules:  # imported before this conftest: set the live config too
        import jax

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_compile_cache()

TEST_OVERRIDES = (
    ("data.limit", 48),
    ("data.max_length", 256),
    ("data.system_prompt", "Answer in the DSA format."),
    ("data.eval_fraction", 0.1),
    ("sft.max_steps", 6),
    ("sft.micro_batch_size", 2),
    ("sft.grad_accumulation_steps", 1),
    ("sft.learning_rate", 3e-3),
    ("sft.eval_every_steps", 3),
    ("sft.eval_batches", 1),
    ("sft.save_every_steps", 3),
    ("sft.keep_checkpoints", 2),
    ("sft.log_every_steps", 2),
    ("sft.num_samples", 1),
    ("sft.sample_max_new_tokens", 8),
    ("eval.num_items", 3),
    ("eval.vote_k", 2),
    ("eval.max_new_tokens", 8),
    ("eval.max_prompt_length", 128),
    ("eval.batch_size", 2),
)
"""The tiny preset shrunk for tests: short prompts and sequences, a handful of steps."""


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    assert (GSM8K_DIR / "train.jsonl.gz").is_file(), f"embedded GSM8K missing at {GSM8K_DIR}"
    return GSM8K_DIR


@pytest.fixture(scope="session")
def tiny_config(gsm8k_dir):
    """The ``tiny`` preset with :data:`TEST_OVERRIDES` applied."""
    from dsa_cast_train import config

    return config.load_config("tiny", overrides=TEST_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from dsa_cast_train import models

    return models.build_tiny_tokenizer()


@pytest.fixture()
def tiny_loaded(tiny_config):
    """A fresh tiny model (function scope: tests may train it)."""
    from dsa_cast_train import models

    return models.load(tiny_config.model)


@pytest.fixture(scope="session")
def trained_run(tiny_config, tmp_path_factory):
    """One 6-step tiny SFT run shared by the SFT and evaluation tests: (config, result)."""
    from dsa_cast_train import sft

    run_dir = tmp_path_factory.mktemp("sft") / "run"
    return tiny_config, sft.run(tiny_config, run_dir)
