"""verl 0.9.1 (installed from PyPI, CPU) calling ``dsa_cast``'s reward functions.

The configuration is verl's own ``ppo_trainer`` config composed by Hydra with the command-line
overrides ``docs/adapters/verl.md`` documents; the reward function is loaded by verl's
``get_custom_reward_fn`` from a ``dsa_reward.py`` file and called by verl's ``naive`` reward
manager (and the pre-0.9 ``BatchRewardManager`` class for ``compute_score_batch``) on a small
``DataProto`` decoded with the project's exported tokenizer.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import torch
import verl
from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import NaiveRewardManager, get_reward_manager_cls
from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager

from dsa_cast import adapters
from dsa_cast.score import grade
from dsa_cast_train import verl_data
from dsa_cast_train.data.dsa_format import END_OF_TURN, build_prompt

DOCS = Path(__file__).resolve().parents[3] / "docs" / "adapters" / "verl.md"
CONFIG_DIR = Path(verl.__file__).parent / "trainer" / "config"
QUESTION = "6 boxes hold 7 apples each. How many apples are there?"
GOOD = (
    "<reasoning>\nPlan:\n1. Multiply the boxes by the apples per box.\n"
    "Reasoning:\n6 boxes of 7 apples make 6 * 7 = 42 apples.\n"
    "Evidence:\nCALC: 6 * 7 = 42\n"
    "Sanity_check:\n42 apples in boxes of 7 gives 6 boxes.\n</reasoning>\n<answer>42</answer>"
)
RESPONSES = [GOOD + END_OF_TURN, GOOD.replace(">42<", ">41<"), "The answer is 42."]
# The overrides docs/adapters/verl.md gives for verl >= 0.9 (path filled in by the test).
CURRENT = ["reward.custom_reward_function.path={path}", "reward.custom_reward_function.name={name}",
           "+reward.custom_reward_function.reward_kwargs.rubric={rubric}"]
LEGACY = ["custom_reward_function.path={path}", "custom_reward_function.name={name}"]


def test_verl_version_read():
    assert importlib.metadata.version("verl") == "0.9.1"


def test_the_docs_give_these_overrides():
    text = DOCS.read_text(encoding="utf-8")
    for override in CURRENT + LEGACY:
        assert override.split("=")[0] + "=" in text, override


@pytest.fixture(scope="module")
def reward_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("verl") / "dsa_reward.py"
    path.write_text("from dsa_cast.score import compute_score, compute_score_batch  # noqa: F401\n")
    return str(path)


def _config(overrides: list[str], **fields):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="ppo_trainer", overrides=[o.format(**fields) for o in overrides])


@pytest.fixture(scope="module")
def tok(tiny_reference):
    return AutoTokenizer.from_pretrained(tiny_reference[0])


def _batch(tok, data_source: str = verl_data.DATA_SOURCE) -> DataProto:
    """A DataProto laid out as verl's rollout leaves it: left-padded prompts, right-padded responses."""
    prompt = tok(build_prompt(QUESTION)).input_ids
    responses = [tok(r, add_special_tokens=False).input_ids for r in RESPONSES]
    width = max(map(len, responses)) + 2
    pad = tok.pad_token_id
    prompts = torch.tensor([prompt] * len(responses))
    resp = torch.tensor([r + [pad] * (width - len(r)) for r in responses])
    mask = torch.cat([torch.ones_like(prompts), torch.tensor([[1] * len(r) + [0] * (width - len(r))
                                                              for r in responses])], dim=1)
    n = len(responses)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "input_ids": torch.cat([prompts, resp], 1),
                 "attention_mask": mask},
        non_tensors={"data_source": np.array([data_source] * n, dtype=object),
                     "reward_model": np.array([{"style": "rule", "ground_truth": "42"}] * n, dtype=object),
                     "extra_info": np.array([{"question": QUESTION} for _ in range(n)], dtype=object)})


def test_current_keys_load_our_function(reward_file):
    fn = get_custom_reward_fn(_config(CURRENT, path=reward_file, name="compute_score", rubric="dsa-cast"))
    assert fn is not None and fn.args[0] is adapters.compute_score
    assert fn.args[1] == {"rubric": "dsa-cast"}


def test_pre_0_9_keys_are_silently_ignored_by_0_9(reward_file):
    """The mismatch issue 13 found: verl 0.9.1 accepts the old top-level keys and uses no custom
    function (main_ppo falls back to its built-in scorer); docs/adapters/verl.md says so."""
    assert get_custom_reward_fn(_config(LEGACY, path=reward_file, name="compute_score")) is None


def test_naive_manager_calls_our_compute_score(reward_file, tok):
    cfg = _config(CURRENT, path=reward_file, name="compute_score", rubric="dsa-cast")
    manager = load_reward_manager(cfg, tok)
    assert isinstance(manager, NaiveRewardManager)
    data = _batch(tok)
    for i, response in enumerate(RESPONSES):
        out = manager.loop.run_until_complete(manager.run_single(data[i:i + 1]))
        want = grade(response.removesuffix(END_OF_TURN), "42", question=QUESTION)
        assert out["reward_score"] == want.total
        info = out["reward_extra_info"]
        assert {"score", "acc", "pred", *want.components} <= set(info)  # ours: verl's scorers give no breakdown
        assert info["acc"] == (1.0 if want.correct else 0.0)
    assert manager.loop.run_until_complete(manager.run_single(data[0:1]))["reward_score"] == 10.0


def test_reward_kwargs_pick_the_rubric(reward_file, tok):
    manager = load_reward_manager(_config(CURRENT, path=reward_file, name="compute_score", rubric="seed"), tok)
    out = manager.loop.run_until_complete(manager.run_single(_batch(tok)[1:2]))
    assert {"format_exact", "format_soft", "cast"} <= set(out["reward_extra_info"])


def test_batch_manager_is_gone_from_the_0_9_registry_but_its_class_calls_compute_score_batch(reward_file, tok):
    with pytest.raises(ValueError, match="Unknown reward manager: batch"):
        get_reward_manager_cls("batch")
    from verl.workers.reward_manager.batch import BatchRewardManager

    fn = get_custom_reward_fn(_config(CURRENT, path=reward_file, name="compute_score_batch", rubric="dsa-cast"))
    assert fn.args[0] is adapters.compute_score_batch
    out = BatchRewardManager(tok, num_examine=0, compute_score=fn)(_batch(tok), return_dict=True)
    want = [grade(r.removesuffix(END_OF_TURN), "42", question=QUESTION).total for r in RESPONSES]
    assert out["reward_tensor"].sum(dim=1).tolist() == pytest.approx(want)
    assert out["reward_extra_info"]["correctness"] == [5.0, 0.0, 0.0]


def test_prepared_parquet_renders_the_projects_prompt(tmp_path, tok):
    from omegaconf import open_dict
    from verl.utils.dataset.rl_dataset import RLHFDataset

    src = tmp_path / "gsm8k"
    src.mkdir()
    rec = '{"question": "%s", "answer": "6 * 7 = <<6*7=42>>42\\n#### 42"}\n' % QUESTION
    for split in ("train", "test"):
        (src / f"{split}.jsonl").write_text(rec * 2)
    assert verl_data.main(["--gsm8k", str(src), "--out", str(tmp_path / "verl")]) == 0
    cfg = _config([]).data
    with open_dict(cfg):
        cfg.cache_dir = str(tmp_path / "cache")  # not the user's ~/.cache/verl
    ds = RLHFDataset(str(tmp_path / "verl" / "train.parquet"), tok, cfg)
    item = ds[0]
    assert item["data_source"] == verl_data.DATA_SOURCE
    assert item["reward_model"]["ground_truth"] == "42"
    text = tok.apply_chat_template(list(item["raw_prompt"]), add_generation_prompt=True, tokenize=False)
    assert text == tok.bos_token + build_prompt(QUESTION)  # the DSA prompt the project trains on
    assert verl_data.main(["--gsm8k", str(src), "--out", str(tmp_path / "verl")]) == 2  # never replaced
