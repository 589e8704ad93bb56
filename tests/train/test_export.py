"""Export: verified zip archives (round trip, tampering, path escapes, atomicity) and the
HuggingFace safetensors layout (exact reload through Tunix's own loader)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

import pytest

pytest.importorskip("tunix")
pytestmark = pytest.mark.train

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dsa_cast_train import export as ex  # noqa: E402


def _tiny_model(num_kv_heads: int = 1, dtype=jnp.float32, seed: int = 0):
    """A tiny Gemma 3 with every parameter random (the MLP kernels start at zero otherwise)."""
    from tunix.models.gemma3 import model as gemma3_lib

    cfg = gemma3_lib.ModelConfig(num_layers=2, num_embed=48, embed_dim=32, hidden_dim=64, num_heads=2,
                                 head_dim=16, num_kv_heads=num_kv_heads, sliding_window_size=16,
                                 param_dtype=dtype)
    model = gemma3_lib.Gemma3(cfg, rngs=nnx.Rngs(seed))
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    nnx.update(model, jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, jnp.float32).astype(x.dtype) for k, x in zip(keys, leaves)]))
    return model


def _params(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in ex._flat_params(model).items()}


def _assert_same_params(a, b) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert pa[k].dtype == pb[k].dtype, k
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A GRPO-style run directory: two actor steps (params + optimizer), config, metrics."""
    import optax
    from tunix.sft import checkpoint_manager as ckpt_lib

    run = tmp_path_factory.mktemp("run")
    model = _tiny_model()
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    mgr = ckpt_lib.CheckpointManager(str(run / "checkpoints" / "actor"))
    assert mgr.save(1, model, optimizer, force=True)
    first = {k: v.copy() for k, v in _params(model).items()}
    nnx.update(model, jax.tree.map(lambda x: x + 1, nnx.state(model, nnx.Param)))
    assert mgr.save(2, model, optimizer, force=True)
    mgr.close()
    (run / "config.json").write_text(json.dumps({"name": "tiny", "grpo": {"max_steps": 2}}))
    (run / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 2, "reward": 0.75}\n')
    return run, model, first


def _zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _rewrite_zip(src: Path, dst: Path, members: dict[str, bytes], extra: list[zipfile.ZipInfo] = ()) -> None:
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)


# ---------------------------------------------------------------------------- zip


def test_zip_round_trip_restores_identical_params(saved_run, tmp_path):
    from tunix.sft import checkpoint_manager as ckpt_lib

    run, model, _ = saved_run
    result = ex.export_zip(run, tmp_path / "out.zip")
    assert result.step == 2 and result.path == tmp_path / "out.zip"
    assert result.sha256 == ex.sha256_file(result.path)
    manifest = ex.verify_zip(result.path)
    assert manifest["step"] == 2
    assert manifest["config"] == {"name": "tiny", "grpo": {"max_steps": 2}}
    assert manifest["metrics"] == {"metrics.jsonl": {"step": 2, "reward": 0.75}}
    names = {e["path"] for e in manifest["files"]}
    assert "run/config.json" in names and "run/metrics.jsonl" in names
    assert any(n.startswith("checkpoint/2/optimizer_state/") for n in names)
    # every file of the step directory is in the archive, with its sha256
    step_dir = run / "checkpoints" / "actor" / "2"
    on_disk = {f"checkpoint/2/{p.relative_to(step_dir).as_posix()}": ex.sha256_file(p)
               for p in step_dir.rglob("*") if p.is_file()}
    assert {e["path"]: e["sha256"] for e in manifest["files"] if e["path"].startswith("checkpoint/")} == on_disk

    target = ex.unpack(result.path, tmp_path / "unpacked")
    for rel, digest in on_disk.items():
        assert ex.sha256_file(target / rel) == digest
    fresh = _tiny_model(seed=7)
    step, _ = ckpt_lib.CheckpointManager(str(target / "checkpoint")).maybe_restore(fresh)
    assert step == 2
    _assert_same_params(fresh, model)


def test_zip_chosen_step_and_params_only(saved_run, tmp_path):
    run, _, first = saved_run
    result = ex.export_zip(run, tmp_path / "s1.zip", step=1, include_optimizer=False)
    manifest = ex.verify_zip(result.path)
    assert manifest["step"] == 1 and manifest["include_optimizer"] is False
    assert not any("optimizer_state" in e["path"] for e in manifest["files"])
    assert any(e["path"].startswith("checkpoint/1/model_params/") for e in manifest["files"])
    with pytest.raises(ex.ExportError, match=r"step 9 not found; available steps: \[1, 2\]"):
        ex.export_zip(run, tmp_path / "s9.zip", step=9)
    assert not (tmp_path / "s9.zip").exists()


def test_default_output_path_and_missing_checkpoint(saved_run, tmp_path):
    run, _, _ = saved_run
    result = ex.export_zip(run)
    assert result.path.parent == run / "export" and result.path.name.endswith("_step2.zip")
    result.path.unlink()
    with pytest.raises(ex.ExportError, match="no checkpoint found"):
        ex.export_zip(tmp_path)


def test_tampered_member_rejected_by_hash(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    members = _zip_members(good)
    victim = next(n for n in members if n.startswith("checkpoint/2/model_params/"))
    members[victim] = members[victim] + b"\x00"  # valid CRC, wrong content
    bad = tmp_path / "bad.zip"
    _rewrite_zip(good, bad, members)
    with pytest.raises(ex.ExportError, match=f"member '{victim}': sha256/size mismatch"):
        ex.verify_zip(bad)
    with pytest.raises(ex.ExportError, match=victim):
        ex.unpack(bad, tmp_path / "t")
    assert not (tmp_path / "t").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".t.")]


def test_corrupted_bytes_rejected_naming_member(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    with zipfile.ZipFile(good) as zf:
        info = next(i for i in zf.infolist() if i.filename == "run/metrics.jsonl")
    raw = bytearray(good.read_bytes())
    # the member's data starts after its 30-byte local header, name and extra field
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    data_at = info.header_offset + 30 + name_len + extra_len
    raw[data_at] ^= 0xFF
    bad = tmp_path / "flipped.zip"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ex.ExportError, match="member 'run/metrics.jsonl'"):
        ex.verify_zip(bad)


def test_unlisted_missing_and_manifestless_rejected(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    members = _zip_members(good)
    extra = tmp_path / "extra.zip"
    _rewrite_zip(good, extra, {**members, "run/smuggled.txt": b"hi"})
    with pytest.raises(ex.ExportError, match="member 'run/smuggled.txt': not listed"):
        ex.verify_zip(extra)
    missing = tmp_path / "missing.zip"
    _rewrite_zip(good, missing, {k: v for k, v in members.items() if k != "run/config.json"})
    with pytest.raises(ex.ExportError, match="member 'run/config.json': listed in the manifest but missing"):
        ex.verify_zip(missing)
    bare = tmp_path / "bare.zip"
    _rewrite_zip(good, bare, {k: v for k, v in members.items() if k != ex.MANIFEST_NAME})
    with pytest.raises(ex.ExportError, match="MANIFEST.json missing"):
        ex.verify_zip(bare)
    notzip = tmp_path / "notzip.zip"
    notzip.write_bytes(b"not a zip")
    with pytest.raises(ex.ExportError, match="not a readable zip"):
        ex.verify_zip(notzip)


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "a\\..\\evil.txt",
                                  "C:/evil.txt"])
def test_escaping_member_paths_refused(saved_run, tmp_path, name):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    members = _zip_members(good)
    manifest = json.loads(members[ex.MANIFEST_NAME])
    manifest["files"].append({"path": name, "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1})
    members[ex.MANIFEST_NAME] = json.dumps(manifest).encode()
    bad = tmp_path / "escape.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
        info = zipfile.ZipInfo("placeholder")
        info.filename = name  # bypass ZipInfo's own normalisation of the name
        zf.writestr(info, b"x")
    with pytest.raises(ex.ExportError, match="escapes the target|unsafe path"):
        ex.unpack(bad, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_symlink_member_refused(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    members = _zip_members(good)
    manifest = json.loads(members[ex.MANIFEST_NAME])
    manifest["files"].append({"path": "run/link", "sha256": hashlib.sha256(b"/etc/passwd").hexdigest(),
                              "size": len(b"/etc/passwd")})
    members[ex.MANIFEST_NAME] = json.dumps(manifest).encode()
    info = zipfile.ZipInfo("run/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = tmp_path / "link.zip"
    _rewrite_zip(good, bad, members, extra=[(info, b"/etc/passwd")])
    with pytest.raises(ex.ExportError, match="member 'run/link': symlinks are refused"):
        ex.unpack(bad, tmp_path / "target")


def test_unpack_refuses_non_empty_target(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "good.zip").path
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ex.ExportError, match="not an empty directory"):
        ex.unpack(good, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert (ex.unpack(good, tmp_path / "empty") / ex.MANIFEST_NAME).is_file()


def test_interrupted_export_keeps_previous_zip(saved_run, tmp_path, monkeypatch):
    run, _, _ = saved_run
    out = tmp_path / "out.zip"
    first = ex.export_zip(run, out, step=1)

    def interrupted(path):
        raise KeyboardInterrupt  # as if the process were stopped during verification

    monkeypatch.setattr(ex, "verify_zip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ex.export_zip(run, out, step=2)
    monkeypatch.undo()
    assert ex.sha256_file(out) == first.sha256  # the old archive is untouched
    assert ex.verify_zip(out)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip"]  # no partial left behind


_SEGMENT = st.sampled_from(["a", "b.txt", "..", ".", "", "x:y", "C:", "~", "..."])


@given(st.lists(_SEGMENT, min_size=1, max_size=6), st.sampled_from(["", "/", "//"]))
def test_accepted_member_names_stay_inside_target(tmp_path_factory, segments, lead):
    """Property: a name :func:`_check_member_name` accepts never resolves outside the target."""
    name = lead + "/".join(segments)
    base = Path("/tmp/dsa_cast_target_root")
    try:
        rel = ex._check_member_name(Path("x.zip"), name)
    except ex.ExportError:
        return
    resolved = Path(os.path.normpath(base / rel))
    assert resolved == base or base in resolved.parents
    assert not PurePosixPath(name).is_absolute()


# ---------------------------------------------------------------------------- safetensors

HF_LAYER_KEYS = (
    "input_layernorm.weight", "post_attention_layernorm.weight", "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight",
)


@pytest.mark.parametrize("num_kv_heads,dtype", [(1, jnp.float32), (2, jnp.float32), (1, jnp.bfloat16)],
                         ids=["q+kv", "fused-qkv", "bf16"])
def test_safetensors_reloads_identically_through_tunix(tmp_path, num_kv_heads, dtype):
    import safetensors.numpy as st_np
    import sentencepiece as spm

    model = _tiny_model(num_kv_heads=num_kv_heads, dtype=dtype)
    fused = "qkv_einsum" in " ".join(_params(model))
    assert fused == (num_kv_heads == 2)
    from dsa_cast_train import hf_tokenizer, models

    tok = tmp_path / "tok.model"
    tok.write_bytes(models.build_tiny_tokenizer().serialized_model_proto())
    result = ex.export_safetensors(model, tmp_path / "hf", tokenizer_path=tok, eos_ids=(1, 106))
    assert result.verified and result.tensors == 2 + 13 * 2
    out = tmp_path / "hf"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".dsa-cast-export.json", "config.json", "model.safetensors", *hf_tokenizer.HF_TOKENIZER_FILES])
    assert (out / "tokenizer.model").read_bytes() == tok.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == _mkdir_mode(tmp_path)  # as mkdir makes it, not 0700
    tensors = st_np.load_file(str(out / "model.safetensors"))
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{k}" for i in range(2) for k in HF_LAYER_KEYS}
    assert set(tensors) == expected
    cfg = model.config
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (cfg.num_heads * cfg.head_dim, cfg.embed_dim)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (num_kv_heads * cfg.head_dim, cfg.embed_dim)
    assert tensors["model.layers.0.self_attn.o_proj.weight"].shape == (cfg.embed_dim, cfg.num_heads * cfg.head_dim)
    assert tensors["model.layers.0.mlp.gate_proj.weight"].shape == (cfg.hidden_dim, cfg.embed_dim)
    # an independent reload (Tunix's loader, default mode) gives bit-identical parameters
    _assert_same_params(ex.load_safetensors_model(out, cfg), model)
    del spm


def test_safetensors_config_json_reads_as_hf_gemma3(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _tiny_model()
    ex.export_safetensors(model, tmp_path / "hf", eos_ids=(1, 106), verify=False)
    hf = transformers.AutoConfig.from_pretrained(str(tmp_path / "hf"))
    c = model.config
    assert type(hf).__name__ == "Gemma3TextConfig"
    assert (hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers) == (c.embed_dim, c.hidden_dim, c.num_layers)
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (c.num_heads, c.num_kv_heads, c.head_dim)
    assert (hf.vocab_size, hf.sliding_window, hf.query_pre_attn_scalar) == (c.num_embed, 16, c.head_dim)
    assert hf.eos_token_id == [1, 106] and hf.tie_word_embeddings


def test_safetensors_serialises_sentencepiece_tokenizer_and_refuses_overwrite(tmp_path):
    import sentencepiece as spm

    from dsa_cast_train import models

    sp = models.build_tiny_tokenizer()
    model = _tiny_model()
    ex.export_safetensors(model, tmp_path / "hf", tokenizer=sp, verify=False)
    reloaded = spm.SentencePieceProcessor(model_file=str(tmp_path / "hf" / "tokenizer.model"))
    assert reloaded.EncodeAsIds("one two") == sp.EncodeAsIds("one two")
    cfg = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is True and "chat_template" in cfg
    with pytest.raises(ex.ExportError, match="exists and is not empty"):
        ex.export_safetensors(model, tmp_path / "hf", verify=False)
    ex.export_safetensors(model, tmp_path / "hf", verify=False, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]


def _mkdir_mode(where: Path) -> int:
    """The mode a plain ``mkdir`` gives here (0777 less the umask)."""
    probe = where / ".mode-probe"
    probe.mkdir()
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.rmdir()
    return mode


def test_safetensors_refuses_a_tokenizer_it_cannot_mirror_before_writing(tmp_path):
    import io

    import sentencepiece as spm

    buf = io.BytesIO()  # a unigram model with NFKC normalisation: no BPE tokenizer.json mirrors it
    spm.SentencePieceTrainer.train(sentence_iterator=iter(["one two three four five six"] * 50),
                                   model_writer=buf, vocab_size=40, hard_vocab_limit=False,
                                   pad_id=0, eos_id=1, bos_id=2, unk_id=3)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(buf.getvalue())
    with pytest.raises(ex.ExportError, match="only BPE"):
        ex.export_safetensors(_tiny_model(), tmp_path / "hf", tokenizer=sp, verify=False)
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a sentencepiece model")
    with pytest.raises(ex.ExportError, match="bad.model.*not a SentencePiece model"):
        ex.export_safetensors(_tiny_model(), tmp_path / "hf", tokenizer_path=bad, verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.model"]  # nothing written


def test_safetensors_bf16_cast_and_bad_dtype(tmp_path):
    import ml_dtypes
    import safetensors.numpy as st_np

    model = _tiny_model()
    ex.export_safetensors(model, tmp_path / "hf", dtype="bfloat16", verify=True)
    tensors = st_np.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert {v.dtype for v in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
    with pytest.raises(ex.ExportError, match="dtype 'int8' not supported"):
        ex.export_safetensors(model, tmp_path / "hf2", dtype="int8")


# ---------------------------------------------------------------------------- CLI and stage entry


@pytest.fixture()
def tiny_run(tiny_config, tmp_path):
    """A run directory as GRPO leaves it: resolved config.json and one actor checkpoint step."""
    from tunix.sft import checkpoint_manager as ckpt_lib

    from dsa_cast_train import config, models

    run = tmp_path / "run"
    loaded = models.load(tiny_config.model)
    model = loaded.model
    nnx.update(model, jax.tree.map(lambda x: x + 0.5, nnx.state(model, nnx.Param)))
    mgr = ckpt_lib.CheckpointManager(str(run / "checkpoints" / "actor"))
    assert mgr.save(4, model, force=True)
    mgr.close()
    (run / "config.json").write_text(config.to_json(tiny_config))
    return run, model


def test_cli_zip_safetensors_and_unpack(tiny_run, tiny_config, tmp_path, capsys):
    run, model = tiny_run
    out_zip, hf = tmp_path / "a.zip", tmp_path / "hf"
    assert ex.main(["--run-dir", str(run), "--out", str(out_zip), "--safetensors", str(hf)]) == 0
    printed = capsys.readouterr().out
    assert "step 4" in printed and "verified=True" in printed
    assert ex.verify_zip(out_zip)["config"]["name"] == "tiny"
    _assert_same_params(ex.load_safetensors_model(hf, model.config), model)
    assert (hf / "tokenizer.model").is_file()
    # the exported directory is a model source of its own: local dir, variant "tiny"
    import dataclasses

    from dsa_cast_train import models

    spec = dataclasses.replace(tiny_config.model, source="local", path=str(hf), variant="tiny")
    reloaded = models.load(spec)
    _assert_same_params(reloaded.model, model)
    assert reloaded.tokenizer.serialized_model_proto() == models.load(tiny_config.model).tokenizer.serialized_model_proto()
    assert ex.main(["--unpack", str(out_zip), str(tmp_path / "u")]) == 0
    assert (tmp_path / "u" / "checkpoint" / "4" / "model_params").is_dir()
    assert ex.main(["--run-dir", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err


def test_stage_run_follows_export_config(tiny_run, tiny_config, tmp_path):
    from dsa_cast_train import config

    run, model = tiny_run
    cfg = config.apply_overrides(tiny_config, [("export.format", "both"), ("export.remove_checkpoints", True),
                                               ("export.output", str(tmp_path / "out"))])
    result = ex.run(cfg, run)
    assert result.zip.step == 4 and result.zip.path.parent == tmp_path / "out"
    assert result.safetensors.verified and result.safetensors.directory == tmp_path / "out" / "hf"
    _assert_same_params(ex.load_safetensors_model(result.safetensors.directory, model.config), model)
    assert not (run / "checkpoints" / "actor").exists()  # removed only after the verified zip
    assert ex.verify_zip(result.zip.path)["step"] == 4
    with pytest.raises(ex.ExportError, match="no checkpoint found"):
        ex.run(cfg, run)


# ---------------------------------------------------------------------------- issue 10


def _archive(path: Path, files: dict[str, bytes], manifest: object = None) -> Path:
    """A self-consistent export archive of ``files`` (manifest hashes and sizes right)."""
    if manifest is None:
        manifest = {"format": ex.MANIFEST_FORMAT, "step": 1, "files": [
            {"path": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in files.items()]}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(ex.MANIFEST_NAME, manifest if isinstance(manifest, (bytes, str)) else json.dumps(manifest))
    return path


@pytest.mark.parametrize("names, bad", [
    (["checkpoint/3/x", "checkpoint//3/x"], "checkpoint//3/x"),
    (["checkpoint/3/x", "checkpoint/./3/x"], "checkpoint/./3/x"),
    (["checkpoint/3/x/."], "checkpoint/3/x/."),
    (["run/Config.json", "run/config.json"], "run/config.json"),
    (["run/caf\u00e9", "run/cafe\u0301"], "run/cafe\u0301"),
    (["run/a", "run/a/b"], "run/a"),
    (["run/a/b", "run/a"], "run/a"),
    (["run/a/", "run/a"], "run/a"),
])
def test_unpack_refuses_aliases_collisions_and_file_folder_conflicts(tmp_path, names, bad):
    zp = _archive(tmp_path / "a.zip", {n: b"data" for n in names})
    with pytest.raises(ex.ExportError, match=rf"member {json.dumps(bad)[1:-1]!r}|member '{bad}'"):
        ex.unpack(zp, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_unpack_size_caps(tmp_path, monkeypatch):
    zp = _archive(tmp_path / "big.zip", {"checkpoint/1/a": b"x" * 5000, "checkpoint/1/b": b"y" * 5000})
    with pytest.raises(ex.ExportError, match=r"members declare \d+ bytes in all, over the limit of 4000"):
        ex.unpack(zp, tmp_path / "t", max_bytes=4000)
    assert ex.main(["--unpack", str(zp), str(tmp_path / "t2"), "--max-unpack-bytes", "4000"]) == 2
    monkeypatch.setattr(ex.shutil, "disk_usage", lambda p: type("U", (), {"free": 100})())
    with pytest.raises(ex.ExportError, match=r"more than the 100 bytes free"):
        ex.unpack(zp, tmp_path / "t3")
    assert not (tmp_path / "t").exists() and not (tmp_path / "t3").exists()


def test_extraction_stops_past_the_declared_size(tmp_path):
    import io

    info = zipfile.ZipInfo("checkpoint/1/a")
    info.file_size = 10

    class Lying:
        def open(self, _info):
            return io.BytesIO(b"z" * 5_000_000)

    with pytest.raises(ex.ExportError, match=r"yields more than the 10 bytes it declares"):
        ex._extract_member(tmp_path / "a.zip", Lying(), info, tmp_path / "out")


@pytest.mark.parametrize("manifest, why", [
    ('{"format": "dsa-cast-export/1", "files": [], "step": ' + "9" * 5000 + "}", "Exceeds the limit"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (b'{"format": "dsa-cast-export/1", "files": [], "x": "\xff"}', "not UTF-8"),
    ('{"format": "dsa-cast-export/1", "files": [{"path": 3}]}', "missing field 'sha256'"),
    ('{"format": "dsa-cast-export/1", "files": 7}', "'int' object is not iterable"),
])
def test_hostile_manifest_is_an_error_naming_it(tmp_path, manifest, why):
    zp = _archive(tmp_path / "m.zip", {"run/x": b"1"}, manifest=manifest)
    with pytest.raises(ex.ExportError, match=rf"member 'MANIFEST.json': unreadable manifest.*{why}"):
        ex.verify_zip(zp)


def test_corruption_error_says_the_manifest_does_not_stop_tampering(saved_run, tmp_path):
    run, _, _ = saved_run
    good = ex.export_zip(run, tmp_path / "g.zip").path
    members = _zip_members(good)
    name = next(n for n in members if n.startswith("checkpoint/"))
    members[name] = members[name][:-1] + bytes([members[name][-1] ^ 1])
    _rewrite_zip(good, tmp_path / "bad.zip", members)
    with pytest.raises(ex.ExportError, match="detects corruption, not tampering"):
        ex.verify_zip(tmp_path / "bad.zip")


def test_unpack_file_errors_are_export_errors(tmp_path, capsys):
    zp = _archive(tmp_path / "a.zip", {"run/" + "n" * 300: b"1"})  # a name the file system refuses
    with pytest.raises(ex.ExportError, match=r"member 'run/n+': cannot write .*File name too long"):
        ex.unpack(zp, tmp_path / "t")
    (tmp_path / "afile").write_text("x")
    ok = _archive(tmp_path / "ok.zip", {"run/x": b"1"})
    assert ex.main(["--unpack", str(ok), str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "afile" in err and "Traceback" not in err
    assert ex.main(["--unpack", str(ok), str(tmp_path / "afile")]) == 2  # an existing file as the target
    assert "not an empty directory" in capsys.readouterr().err


def test_zip_out_never_silently_replaces_a_foreign_file(saved_run, tmp_path, capsys):
    run, _, _ = saved_run
    precious = tmp_path / "notes.zip"
    precious.write_text("my notes, not an archive")
    with pytest.raises(ex.ExportError, match="exists and is not a dsa-cast export archive"):
        ex.export_zip(run, precious)
    assert precious.read_text() == "my notes, not an archive"
    assert ex.main(["--run-dir", str(run), "--out", str(precious)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    ours = ex.export_zip(run, tmp_path / "ours.zip", step=1).path  # an archive of ours is replaced
    assert ex.export_zip(run, ours, step=2).step == 2 and ex.verify_zip(ours)["step"] == 2
    assert ex.main(["--run-dir", str(run), "--out", str(precious), "--overwrite"]) == 0
    assert ex.verify_zip(precious)["step"] == 2
    with pytest.raises(ex.ExportError, match="it is the input"):  # never over one of its own inputs
        ex.export_zip(run, run / "metrics.jsonl", overwrite=True)
    assert (run / "metrics.jsonl").read_text().startswith('{"step": 1')


def test_safetensors_overwrite_never_deletes_user_files(tmp_path):
    model = _tiny_model()
    models_dir = tmp_path / "models" / "hf"
    models_dir.mkdir(parents=True)
    (models_dir / "README.md").write_text("my notes")
    with pytest.raises(ex.ExportError, match=r"holds files dsa-cast did not write \(README.md\)"):
        ex.export_safetensors(model, models_dir, verify=False, overwrite=True)
    assert (models_dir / "README.md").read_text() == "my notes"
    ours = tmp_path / "ours"
    ex.export_safetensors(model, ours, verify=False)
    ex.export_safetensors(model, ours, verify=False, overwrite=True)  # ours: replaced
    (ours / "notes.txt").write_text("added by hand")
    with pytest.raises(ex.ExportError, match=r"notes\.txt"):
        ex.export_safetensors(model, ours, verify=False, overwrite=True)
    assert (ours / "notes.txt").read_text() == "added by hand" and (ours / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "ours"]  # no temporary left


def test_pipeline_export_stage_refuses_a_user_directory(tiny_run, tiny_config, tmp_path):
    from dsa_cast_train import config

    run, _ = tiny_run
    (tmp_path / "my" / "hf").mkdir(parents=True)
    (tmp_path / "my" / "hf" / "README.md").write_text("keep")
    cfg = config.apply_overrides(tiny_config, [("export.format", "both"), ("export.output", str(tmp_path / "my"))])
    with pytest.raises(ex.ExportError, match=rf"{tmp_path / 'my' / 'hf'}: holds files dsa-cast did not write"):
        ex.run(cfg, run)
    assert (tmp_path / "my" / "hf" / "README.md").read_text() == "keep"


def test_remove_checkpoints_removes_only_step_directories(tiny_run, tiny_config, tmp_path):
    from dsa_cast_train import config

    run, _ = tiny_run
    keep = run / "checkpoints" / "actor" / "my_notes.txt"
    keep.write_text("keep")
    cfg = config.apply_overrides(tiny_config, [("export.format", "zip"), ("export.remove_checkpoints", True),
                                               ("export.output", str(tmp_path / "out"))])
    ex.run(cfg, run)
    assert keep.read_text() == "keep" and ex.checkpoint_steps(run / "checkpoints" / "actor") == []


def test_cli_export_refuses_a_run_in_progress(tiny_run, tmp_path, capsys):
    from dsa_cast_train import config as cfg_lib
    from dsa_cast_train import runs

    run, _ = tiny_run
    (run / runs.MARKER).write_text('{"stage": "grpo"}')
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom dsa_cast_train import runs\n"
        "lock = runs.RunLock(__import__('pathlib').Path(sys.argv[1]), 'grpo')\nprint('locked', flush=True)\n"
        "time.sleep(120)\n"), str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert ex.main(["--run-dir", str(run), "--out", str(tmp_path / "x.zip")]) == 2
        assert f"in use by another run (pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert ex.main(["--run-dir", str(run), "--out", str(tmp_path / "x.zip")]) == 0
    del cfg_lib
