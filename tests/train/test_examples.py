"""dsa_cast_train.examples: the one place the trainers read their items from (issue 11)."""

from __future__ import annotations

import subprocess
import sys

from dsa_cast_train import config as cfg
from dsa_cast_train import data, evaluate, examples, grpo, sft


def test_trainers_share_the_data_helpers():
    # sft keeps its old names (re-exported), evaluate and grpo read from examples, not sft
    for name in ("load_examples", "data_source", "system_prompt", "train_and_held_out"):
        assert getattr(sft, name) is getattr(examples, name)
    assert grpo.load_examples is examples.train_and_held_out
    assert evaluate.load_examples is examples.load_examples
    for module in (evaluate, grpo, examples):
        assert "sft" not in vars(module), f"{module.__name__} should not depend on sft"


def test_train_and_held_out_is_the_sft_split():
    data_cfg = cfg.load_preset("tiny").data
    train, held_out = examples.train_and_held_out(data_cfg)
    everything = examples.load_examples(data_cfg, "train")
    want_train, want_held = data.split_examples(everything, eval_fraction=data_cfg.eval_fraction,
                                                seed=data_cfg.split_seed)
    assert [e.id for e in train] == [e.id for e in want_train]
    assert [e.id for e in held_out] == [e.id for e in want_held]
    assert not {e.id for e in train} & {e.id for e in held_out}
    assert examples.system_prompt(data_cfg) == (data_cfg.system_prompt or data.SYSTEM_PROMPT)


def test_trainer_modules_import_without_jax():
    # `--help`, config checks and the pipeline's planning must not pay for JAX / Tunix
    heavy = ("jax", "flax", "tunix", "grain", "optax", "orbax", "matplotlib")
    code = ("import sys; import dsa_cast_train.sft, dsa_cast_train.grpo, dsa_cast_train.evaluate, "
            "dsa_cast_train.examples, dsa_cast_train.optim, dsa_cast_train.pipeline; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
