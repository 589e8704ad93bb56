"""OpenRLHF's own reward path (``openrlhf.utils.agent.SingleTurnAgentExecutor``, OpenRLHF 0.11.2
installed with ``--no-deps``: the package pins flash-attn and deepspeed, which need CUDA) calling
``dsa_cast``'s ``reward_func`` loaded from a ``reward_func.py`` file, exactly as
``--reward.remote_url reward_func.py`` makes it. vLLM is replaced by a scripted engine that
returns chosen token ids; everything else (tokenising the prompt, decoding prompt + response
with ``skip_special_tokens=False``, loading the file, the thread offload, reading ``rewards`` /
``scores`` / ``extra_logs``) is OpenRLHF's code, with the project's exported tokenizer."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from types import SimpleNamespace

import pytest
import torch
from openrlhf.utils.agent import SingleTurnAgentExecutor
from transformers import AutoTokenizer

from dsa_cast.score import grade
from dsa_cast_train.data.dsa_format import END_OF_TURN, SYSTEM_PROMPT

QUESTION = "6 boxes hold 7 apples each. How many apples are there?"
COMPLETION = (
    "<reasoning>\nPlan:\n1. Multiply the boxes by the apples per box.\n"
    "Reasoning:\n6 boxes of 7 apples make 6 * 7 = 42 apples.\n"
    "Evidence:\nCALC: 6 * 7 = 42\n"
    "Sanity_check:\n42 apples in boxes of 7 gives 6 boxes.\n</reasoning>\n<answer>42</answer>"
)
LABEL = "6 boxes of 7 apples: 6 * 7 = <<6*7=42>>42 apples.\n#### 42"


def test_openrlhf_version_read():
    assert importlib.metadata.version("openrlhf") == "0.11.2"


class ScriptedEngine:
    """Stands in for vLLM's ``AsyncLLMEngine.generate``: returns the given response ids."""

    def __init__(self, response_ids: list[int], finish_reason: str) -> None:
        self.response_ids = response_ids
        self.finish_reason = finish_reason
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.prompts.append(list(prompt_token_ids))
        out = SimpleNamespace(token_ids=list(self.response_ids), finish_reason=self.finish_reason, logprobs=None)
        return SimpleNamespace(outputs=[out])


@pytest.fixture(scope="module")
def tok(tiny_reference):
    return AutoTokenizer.from_pretrained(tiny_reference[0])


@pytest.fixture(scope="module")
def prompt(tok) -> str:
    # --data.apply_chat_template: OpenRLHF renders the dataset's messages to text
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _reward_file(tmp_path, body: str):
    path = tmp_path / "reward_func.py"
    path.write_text(body, encoding="utf-8")
    return str(path)


def _run(executor, tok, prompt, response_ids, finish_reason="stop", label=LABEL):
    engine = ScriptedEngine(response_ids, finish_reason)
    params = SimpleNamespace(max_tokens=256, logprobs=None)  # the SamplingParams fields it reads
    out = asyncio.run(executor.execute(prompt, label, params, max_length=2048, hf_tokenizer=tok,
                                       llm_engine=engine))
    return out, engine


def test_end_of_turn_completion_scores_the_maximum(tok, prompt, tmp_path):
    executor = SingleTurnAgentExecutor([_reward_file(tmp_path, "from dsa_cast.score import reward_func  # noqa: F401\n")])
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    ended = tok(COMPLETION, add_special_tokens=False).input_ids + [eot]
    out, engine = _run(executor, tok, prompt, ended)
    assert engine.prompts[0][0] == tok.bos_token_id  # the rendered prompt carries the BOS
    query = tok.decode(out["observation_tokens"], skip_special_tokens=False)
    assert query.endswith("</answer>" + END_OF_TURN)  # what reward_func receives
    assert float(out["reward"]) == grade(COMPLETION, LABEL).total == 10.0
    assert float(out["scores"]) == 1.0
    assert float(out["extra_logs"]["dsa_cast/correctness"]) == 5.0
    cut, _ = _run(executor, tok, prompt, ended[:-1], finish_reason="length")
    assert cut["truncated"] and float(cut["reward"]) == float(out["reward"])  # cut or ended: the same


def test_without_marker_stripping_openrlhf_would_lose_half_a_point(tok, prompt, tmp_path):
    """The mismatch issue 13 found: with stripping off, a normally ended completion loses 0.5."""
    body = ("from dsa_cast.score import reward_func as dsa\n\n"
            "def reward_func(queries, prompts, labels, **kwargs):\n"
            "    return dsa(queries, prompts, labels, end_markers=())\n")
    executor = SingleTurnAgentExecutor([_reward_file(tmp_path, body)])
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    out, _ = _run(executor, tok, prompt, tok(COMPLETION, add_special_tokens=False).input_ids + [eot])
    assert float(out["reward"]) == 9.5


def _run_logged(executor, tok, prompt, caplog, label):
    logger = logging.getLogger("openrlhf")
    old = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO):
            out, _ = _run(executor, tok, prompt, tok(COMPLETION, add_special_tokens=False).input_ids, label=label)
    finally:
        logger.propagate = old
    return out


def test_an_unreadable_label_scores_the_minimum_by_default(tok, prompt, tmp_path, caplog):
    """on_error='min' (the default): the row gets the rubric's minimum and a WARNING naming it,
    so one bad label does not take the RL step down (docs/adapters/openrlhf.md)."""
    executor = SingleTurnAgentExecutor([_reward_file(tmp_path, "from dsa_cast.score import reward_func  # noqa: F401\n")])
    out = _run_logged(executor, tok, prompt, caplog, label="no number here")
    assert float(out["reward"]) == 0.0
    assert any("labels[0]" in r.getMessage() and r.levelno == logging.WARNING and r.name == "dsa_cast.adapters"
               for r in caplog.records)


def test_a_raising_reward_func_is_swallowed_at_info_level(tok, prompt, tmp_path, caplog):
    """With on_error='raise', OpenRLHF catches the exception, logs it at INFO and returns no
    reward (docs/adapters/openrlhf.md): why 'min' is the default."""
    body = ("from dsa_cast.score import reward_func as dsa\n\n"
            "def reward_func(queries, prompts, labels, **kwargs):\n"
            "    return dsa(queries, prompts, labels, on_error='raise')\n")
    executor = SingleTurnAgentExecutor([_reward_file(tmp_path, body)])
    out = _run_logged(executor, tok, prompt, caplog, label="no number here")
    assert out["reward"] is None and out["scores"] is None
    assert any("labels[0]" in r.getMessage() and r.levelno == logging.INFO and r.name.startswith("openrlhf")
               for r in caplog.records)


def test_reward_is_a_float32_tensor(tok, prompt, tmp_path):
    executor = SingleTurnAgentExecutor([_reward_file(tmp_path, "from dsa_cast.score import reward_func  # noqa: F401\n")])
    out, _ = _run(executor, tok, prompt, tok(COMPLETION, add_special_tokens=False).input_ids)
    assert isinstance(out["reward"], torch.Tensor) and out["reward"].dtype == torch.float32
