"""HF tokenizer files built from the project's SentencePiece models give SentencePiece's ids.

Checked with the ``tokenizers`` library (a dependency of the ``[train]`` extra through Tunix);
the framework tier (``tests/frameworks``) checks the same files through transformers'
``AutoTokenizer`` and the chat template through ``apply_chat_template``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("tunix")
pytestmark = pytest.mark.train

import jinja2  # noqa: E402
from sentencepiece import sentencepiece_model_pb2 as pb  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from dsa_cast_train import hf_tokenizer as hft  # noqa: E402
from dsa_cast_train import models  # noqa: E402
from dsa_cast_train.data.dsa_format import SYSTEM_PROMPT, build_prompt  # noqa: E402

ALPHABET = st.sampled_from(list("ab cd  e\n\t0123456789.,:;$%é日🙂<>/_-=*+") + [
    "<start_of_turn>", "<end_of_turn>", "<reasoning>", "</answer>", "  ", "   ", "\n\n", " Plan", " the",
    "CALC:", "user", "model"])
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)
EXAMPLES = ["a  b   c", "  lead", "x\n\n  y", "trailing  ", "Reasoning:  double", "\t tab", "",
            build_prompt("Weng earns $12 an hour.  Yesterday she worked 50 minutes. How much? ")]


@pytest.fixture(scope="module")
def tiny():
    sp = models.build_tiny_tokenizer()
    blob = sp.serialized_model_proto()
    return sp, blob, Tokenizer.from_str(hft.build_tokenizer_json(blob))


@pytest.mark.parametrize("text", EXAMPLES)
def test_same_ids_as_sentencepiece(tiny, text):
    sp, _, tok = tiny
    assert tok.encode(text, add_special_tokens=False).ids == sp.EncodeAsIds(text)
    assert tok.encode(text).ids == [sp.bos_id(), *sp.EncodeAsIds(text)]  # add_bos_token
    assert tok.decode(sp.EncodeAsIds(text), skip_special_tokens=False) == text


@given(TEXTS)
def test_property_same_ids_and_round_trip(tiny, text):
    sp, _, tok = tiny
    ids = sp.EncodeAsIds(text)
    assert tok.encode(text, add_special_tokens=False).ids == ids
    assert tok.decode(ids, skip_special_tokens=False) == sp.DecodeIds(ids)


def test_chat_markers_special_newline_not(tiny):
    sp, blob, tok = tiny
    special = hft.special_tokens(blob)
    assert (special.bos, special.eos, special.pad, special.unk) == ("<s>", "</s>", "<pad>", "<unk>")
    assert dict(special.markers) == {"<start_of_turn>": 4, "<end_of_turn>": 5}
    ids = sp.EncodeAsIds("<answer>1</answer><end_of_turn>\n")
    assert tok.decode(ids, skip_special_tokens=True) == "<answer>1</answer>\n"


def _render(messages, add_generation_prompt=True, bos="<bos>"):
    def raise_exception(msg):
        raise ValueError(msg)

    env = jinja2.Environment()
    env.globals["raise_exception"] = raise_exception
    return env.from_string(hft.CHAT_TEMPLATE).render(messages=messages, bos_token=bos,
                                                     add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("question", ["What is 2 + 2?", " padded  question \n", "multi\nline"])
def test_chat_template_is_the_projects_prompt(question):
    system = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
    assert _render(system) == "<bos>" + build_prompt(question)
    parts = [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
             {"role": "user", "content": [{"type": "text", "text": question}]}]
    assert _render(parts) == "<bos>" + build_prompt(question)
    assert _render([{"role": "user", "content": question}]) == "<bos>" + build_prompt(question, system_prompt="")
    turns = system + [{"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}]
    assert _render(turns, add_generation_prompt=False).endswith(
        "<start_of_turn>model\nA<end_of_turn>\n<start_of_turn>user\nB<end_of_turn>\n")
    with pytest.raises(ValueError, match="alternate"):
        _render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_written_files(tiny, tmp_path):
    _, blob, _ = tiny
    paths = hft.write_hf_tokenizer_files(tmp_path, blob, eos_ids=(1, 5), model_max_length=4096)
    assert sorted(p.name for p in paths) == sorted(hft.HF_TOKENIZER_FILES)
    assert (tmp_path / "tokenizer.model").read_bytes() == blob
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and cfg["add_eos_token"] is False
    assert cfg["chat_template"] == hft.CHAT_TEMPLATE and cfg["model_max_length"] == 4096
    assert cfg["additional_special_tokens"] == ["<start_of_turn>", "<end_of_turn>"]
    assert all(v["special"] for v in cfg["added_tokens_decoder"].values())
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen == {"bos_token_id": 2, "eos_token_id": [1, 5], "pad_token_id": 0}


def test_unsupported_models_are_refused(tiny):
    _, blob, _ = tiny
    proto = pb.ModelProto()
    proto.ParseFromString(blob)
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    with pytest.raises(ValueError, match="only BPE"):
        hft.build_tokenizer_json(proto.SerializeToString())
    proto.trainer_spec.model_type = pb.TrainerSpec.BPE
    proto.normalizer_spec.add_dummy_prefix = True
    with pytest.raises(ValueError, match="normalizer"):
        hft.build_tokenizer_json(proto.SerializeToString())
