"""Full-parameter GRPO with DSA-CAST rewards on Tunix 0.1.7 (``RLCluster`` + ``GRPOLearner``).

The actor starts from an SFT checkpoint (``grpo.init_checkpoint``) or from the model source's
weights; the frozen reference is an independent copy of the model source's (base) weights; actor,
reference and the vanilla rollout share one mesh (so actor and rollout share weights and no sync
is needed). Rewards are ``dsa_cast.score.tunix_rewards(grpo.rubric)``: one named function per rubric
component, so Tunix logs each as ``rewards/<name>`` and sums them.

Each reward batch is also recorded by :class:`RewardLogger` into ``<run_dir>/metrics.jsonl``
(mean total reward, each component's mean, format adherence, accuracy) and, optionally, every
rollout into ``rollouts.jsonl``; a reward-curve PNG is drawn at the end. Checkpoints go to
``<run_dir>/checkpoints/actor/<step>``; TensorBoard to ``<run_dir>/tensorboard``. Re-running on the
same directory resumes from the newest actor checkpoint (Tunix restores model, optimizer and data
position).

CLI: ``python -m dsa_cast_train.grpo --preset tiny --run-dir runs/grpo-tiny``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsa_cast import columns, io, score
from dsa_cast import parse as dsa_parse
from dsa_cast_train import cli, data, digests, distributed, guards, models, optim, runs
from dsa_cast_train.examples import system_prompt, train_and_held_out

log = logging.getLogger("dsa_cast_train.grpo")

METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"
REWARD_CURVE_FILE = "reward_curve.png"
SUMMARY_FILE = "grpo_summary.json"
CHECKPOINT_DIR = "checkpoints"
ACTOR_SUBDIR = "actor"  # RLCluster writes the actor under <checkpoint_root>/actor/<step>
TENSORBOARD_DIR = "tensorboard"


@dataclasses.dataclass(frozen=True)
class GRPOResult:
    """What a GRPO run produced."""

    run_dir: Path
    checkpoint_dir: Path
    """``<run_dir>/checkpoints/actor``: orbax steps of the actor (params + optimizer)."""
    actor_steps: int
    """Actor optimizer updates reached (== ``grpo.max_steps`` when finished)."""
    resumed_from: int
    """Actor step restored at start (0 for a fresh run)."""
    prompts: int
    """Training prompts used (after dropping over-long ones)."""
    dropped_prompts: int
    """Prompts longer than ``grpo.max_prompt_length`` tokens, left out."""
    metrics_path: Path
    reward_curve: Path | None
    seconds: float
    last: Mapping[str, Any] | None
    """The last training record of ``metrics.jsonl``."""


# --------------------------------------------------------------------------------------------
# reward logging
# --------------------------------------------------------------------------------------------


class RewardLogger:
    """Wraps Tunix reward functions and records each reward batch into a JSONL file.

    :attr:`reward_fns` are the wrapped functions (same ``__name__``, same values). Each reward
    batch produces one record, written by :meth:`metric_fn` (which Tunix calls right after the
    rewards, in the same thread)::

        {"step", "mode", "n", "reward_mean", "reward_min", "reward_max",
         "components": {name: mean}, "format_adherence", "accuracy", "graded_with_reference",
         "groups", "groups_with_signal", "reward_group_std_mean", "advantage_abs_mean",
         "completion_chars_mean", "reward_seconds", "time"}

    ``format_adherence`` is the share of completions whose parse has ``exact_format``;
    ``accuracy`` the share whose ``dsa_cast.score.grade(completion, answer, question=...).correct``
    is true among those with a reference. ``step`` is the 1-based global step the rollouts feed (``step_fn() + 1``).
    With ``prefix`` (the ``<reasoning>\\n`` pre-fill) the text graded is ``prefix + completion``,
    as the model's full answer begins with the pre-filled tag.

    With ``num_generations`` (the group size G; completions arrive group by group, ``p0,p0,p1,p1``)
    a record also says whether GRPO had anything to learn from: ``groups_with_signal`` counts the
    groups whose rewards are not all equal (a group of equal rewards has all-zero advantages, so
    only the KL term acts on it), ``reward_group_std_mean`` is the mean within-group standard
    deviation, ``advantage_abs_mean`` the mean absolute advantage Tunix computed.
    """

    def __init__(
        self,
        reward_fns: Sequence[Callable[..., Any]],
        *,
        metrics_path: str | Path | None,
        rubric: str,
        step_fn: Callable[[], int] = lambda: 0,
        rollouts_path: str | Path | None = None,
        prefix: str = "",
        on_record: Callable[[dict], None] | None = None,
        num_generations: int = 1,
    ):
        if num_generations < 1:
            raise ValueError(f"RewardLogger: num_generations must be at least 1, got {num_generations}")
        self.num_generations = num_generations
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None  # None: no files
        self.rollouts_path = Path(rollouts_path) if rollouts_path else None
        self.rubric = rubric
        self.step_fn = step_fn
        self.prefix = prefix
        self.on_record = on_record
        self._lock = threading.Lock()
        self._pending: dict[int, dict[str, Any]] = {}
        self.reward_fns = [self._wrap(fn) for fn in reward_fns]
        self.names = [fn.__name__ for fn in reward_fns]
        # the BatchGrader shared by dsa_cast.score.tunix_rewards functions: its cache already holds
        # the batch's grades when metric_fn runs (used only if it grades with the same rubric)
        graders = {id(g): g for fn in reward_fns if (g := getattr(fn, "grader", None)) is not None}
        shared = next(iter(graders.values())) if len(graders) == 1 else None
        same_rubric = shared is not None and getattr(shared.rubric, "name", None) == rubric
        self._grader = shared if same_rubric else None
        self.reward_seconds = 0.0  # time inside the reward functions (what Tunix would spend anyway)
        self.logging_seconds = 0.0  # time in metric_fn: grading lookups, records, files

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__

        def wrapped(prompts, completions, **kwargs):
            t0 = time.perf_counter()
            texts = [self.prefix + c for c in completions] if self.prefix else list(completions)
            values = [float(v) for v in fn(prompts=prompts, completions=texts, **kwargs)]
            dt = time.perf_counter() - t0
            with self._lock:
                slot = self._pending.setdefault(threading.get_ident(), {"components": {}, "seconds": 0.0})
                slot["components"][name] = values
                slot["mode"] = str(kwargs.get("mode", "train"))
                slot["seconds"] += dt
                self.reward_seconds += dt
            return values

        wrapped.__name__ = name
        wrapped.__qualname__ = name
        wrapped.__doc__ = fn.__doc__
        return wrapped

    def metric_fn(self, prompts, completions, rewards, advantages, **kwargs) -> dict[str, Any]:
        """Tunix ``metric_fns`` entry: format adherence and accuracy of the batch, then the record.

        The grades come from the reward functions' shared ``BatchGrader`` cache when they have
        one (``dsa_cast.score.tunix_rewards``: no second grading), else from ``dsa_cast.score.grade``.
        """
        t0 = time.perf_counter()
        with self._lock:
            slot = self._pending.pop(threading.get_ident(), {"components": {}, "mode": "train", "seconds": 0.0})
        texts = [self.prefix + c for c in completions] if self.prefix else list(completions)
        answers = _texts_of(kwargs.get("answer"), len(texts), "answer")
        questions = _texts_of(kwargs.get("question"), len(texts), "question")
        fmt = [bool(dsa_parse.parse(t).exact_format) for t in texts]
        grades = self._grades(texts, kwargs, answers, questions)
        judged = [g.correct for g in grades if g.correct is not None]
        total = np.asarray(rewards, dtype=np.float64)
        groups = group_signal(total, self.num_generations)
        record = {
            # train: the 1-based step these rollouts feed; eval: the actor steps completed so far
            "step": int(self.step_fn()) + (1 if slot["mode"] == "train" else 0),
            "mode": slot["mode"],
            "n": len(texts),
            "reward_mean": float(total.mean()),
            "reward_min": float(total.min()),
            "reward_max": float(total.max()),
            "components": {k: float(np.mean(v)) for k, v in slot["components"].items()},
            "format_adherence": float(np.mean(fmt)) if fmt else 0.0,
            "accuracy": float(np.mean(judged)) if judged else None,
            "graded_with_reference": len(judged),
            **groups,
            "advantage_abs_mean": float(np.mean(np.abs(np.asarray(advantages, dtype=np.float64))))
            if len(total) else 0.0,
            "completion_chars_mean": float(np.mean([len(c) for c in completions])) if completions else 0.0,
            "reward_seconds": slot["seconds"],
            "time": time.time(),
        }
        if self.metrics_path is not None:
            _append_jsonl(self.metrics_path, [record])
        if self.rollouts_path is not None:
            rows = []
            for i, (c, a, q) in enumerate(zip(completions, answers, questions)):
                rows.append({"step": record["step"], "mode": record["mode"], "index": i, "question": q,
                             "answer": a, "completion": c,
                             "rewards": {k: v[i] for k, v in slot["components"].items()},
                             "exact_format": fmt[i], "correct": grades[i].correct})
            _append_jsonl(self.rollouts_path, rows)
        with self._lock:
            self.logging_seconds += time.perf_counter() - t0
        if self.on_record is not None:
            self.on_record(record)
        return {
            "dsa/format_adherence": (record["format_adherence"], np.mean),
            "dsa/accuracy": (record["accuracy"] if record["accuracy"] is not None else float("nan"), np.mean),
        }


    def _grades(self, texts, kwargs, answers, questions) -> list[Any]:
        grader = self._grader
        if grader is not None:
            cols = {k: v for k, v in kwargs.items() if k in ("answer", "question")}
            grades, _ = grader.grades(*grader.read_batch("RewardLogger", texts, cols), who="RewardLogger")
            return list(grades)
        return [score.grade(t, a, rubric=self.rubric, question=q) for t, a, q in zip(texts, answers, questions)]


def group_signal(rewards: Sequence[float], num_generations: int) -> dict[str, Any]:
    """``{"groups", "groups_with_signal", "reward_group_std_mean"}`` of a reward batch laid out
    group by group (G = ``num_generations`` consecutive completions per prompt). A group whose
    rewards are all equal gives GRPO zero advantages. ``None`` values when the batch is not a
    whole number of groups."""
    r = np.asarray(rewards, dtype=np.float64)
    if num_generations < 1 or r.size == 0 or r.size % num_generations:
        return {"groups": None, "groups_with_signal": None, "reward_group_std_mean": None}
    g = r.reshape(-1, num_generations)
    return {"groups": int(g.shape[0]),
            "groups_with_signal": int(np.sum(g.max(axis=1) > g.min(axis=1))),
            "reward_group_std_mean": float(g.std(axis=1).mean())}


def _texts_of(values: Any, n: int, name: str) -> list[str | None]:
    """Batch column ``name`` as ``n`` texts (None stays None) for the logger's fallback grading
    and its records: the core's reading (:func:`dsa_cast.columns.column`: numpy cells, bytes,
    a length check), then ``str`` of each value."""
    if values is None:
        return [None] * n
    return [None if v is None else str(v) for v in columns.column(values, n, f"batch column {name!r}")]


def _append_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()


def read_metrics(path: str | Path, mode: str | None = "train") -> list[dict]:
    """Records of a ``metrics.jsonl`` (only ``mode`` ones unless ``mode`` is None); a bad line,
    such as the torn last line of a killed writer, is skipped."""
    return [rec for rec in runs.read_metrics(path) if mode is None or rec.get("mode") == mode]


def truncate_records(path: str | Path, max_step: int, *, redo_eval: bool = True) -> int:
    """Keep the train records of steps ``<= max_step`` and the eval records of steps ``< max_step``
    (``<= max_step`` when the resumed run will not evaluate at ``max_step`` again: ``redo_eval``
    False); rewrites the file atomically, returns how many were dropped (a torn line too). On
    resume the learner evaluates at the restored step first and redoes the steps after it, so each
    (mode, step) then appears once."""
    def keep(rec: dict) -> bool:
        step = runs.step_of(rec)
        return step < max_step or (step == max_step and (rec.get("mode") != "eval" or not redo_eval))

    return runs.truncate_records(path, keep)


def plot_reward_curve(metrics_path: str | Path, out_path: str | Path, *, title: str = "GRPO") -> Path | None:
    """Draw mean reward and each component per step, plus the held-out (eval) mean reward when
    present (left), and format adherence / accuracy / the share of groups with a learning signal
    (when recorded) (right) from ``metrics.jsonl``; returns the PNG path, or None without
    training records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(metrics_path, "train")
    if not recs:
        return None
    by_step: dict[int, list[dict]] = {}
    for r in recs:
        by_step.setdefault(int(r["step"]), []).append(r)
    steps = sorted(by_step)

    def mean_of(key: Callable[[dict], float | None]) -> list[float]:
        vals = []
        for s in steps:
            xs = [key(r) for r in by_step[s] if key(r) is not None]
            vals.append(sum(xs) / len(xs) if xs else float("nan"))
        return vals

    names = sorted({k for r in recs for k in r.get("components", {})})
    from matplotlib.ticker import MaxNLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    drawn = [mean_of(lambda r: r["reward_mean"])]
    ax1.plot(steps, drawn[0], label="total (mean)", linewidth=2, color="black")
    for name in names:
        drawn.append(mean_of(lambda r, n=name: r.get("components", {}).get(n)))
        ax1.plot(steps, drawn[-1], label=name.removeprefix("dsa_cast_"), alpha=0.8)
    evals: dict[int, list[float]] = {}
    for r in read_metrics(metrics_path, "eval"):
        evals.setdefault(int(r["step"]), []).append(float(r["reward_mean"]))
    if evals:
        xs = sorted(evals)
        drawn.append([sum(evals[x]) / len(evals[x]) for x in xs])
        ax1.plot(xs, drawn[-1], "o--", color="tab:red", label="held-out total (eval)")
    values = [v for series in drawn for v in series if v == v]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = max(0.05 * (hi - lo), 0.1)
    ax1.set_ylim(min(0.0, lo) - pad, hi + pad)  # an all-zero run still shows a readable axis
    ax1.set_xlabel("step")
    ax1.set_ylabel("reward")
    ax1.set_title(f"{title}: reward per step")
    ax2.plot(steps, mean_of(lambda r: r.get("format_adherence")), "o-", label="format adherence")
    ax2.plot(steps, mean_of(lambda r: r.get("accuracy")), "o-", label="accuracy")
    if any(r.get("groups") for r in recs):
        ax2.plot(steps, mean_of(lambda r: r["groups_with_signal"] / r["groups"] if r.get("groups") else None),
                 "s:", label="groups with signal (nonzero advantage)", alpha=0.8)
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_xlabel("step")
    ax2.set_title(f"{title}: rollouts")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        # legends below the axes, never over the curves
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_output(out, "wb") as fh:
        fig.savefig(fh, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# Tunix wiring
# --------------------------------------------------------------------------------------------


def reward_functions(rubric: str) -> list[Callable[..., Any]]:
    """The Tunix reward functions of a ``dsa_cast`` rubric (one per component)."""
    fns = list(score.tunix_rewards(rubric))
    if not fns:
        raise ValueError(f"grpo.rubric {rubric!r}: dsa_cast.score.tunix_rewards returned no functions")
    return fns


def make_optimizer(g) -> Any:
    """AdamW with linear warm-up then cosine decay and a global-norm clip (the notebook's GRPO
    optimizer), from a :class:`~dsa_cast_train.config.GRPOConfig`: :func:`dsa_cast_train.optim.build`,
    the builder SFT uses too."""
    return optim.build(g)


def rollout_config(g, eos_ids: Sequence[int]):
    """Tunix ``RolloutConfig`` from a GRPOConfig; the KV cache holds exactly prompt + new tokens."""
    from tunix.rl.rollout import base_rollout

    return base_rollout.RolloutConfig(
        max_tokens_to_generate=g.max_new_tokens, max_prompt_length=g.max_prompt_length,
        kv_cache_size=g.max_prompt_length + g.max_new_tokens, temperature=g.temperature,
        top_p=g.top_p, top_k=g.top_k, eos_tokens=[int(i) for i in eos_ids], seed=int(g.seed))


def copy_model(model) -> Any:
    """An independent copy of an NNX model (new buffers; same graph and shardings)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(jnp.copy, state))


def build_learner(*, actor, reference, tokenizer, mesh, g, eos_ids: Sequence[int], run_dir: Path,
                  reward_fns: Sequence[Callable[..., Any]], metric_fns: Sequence[Callable[..., Any]] = ()):
    """``(GRPOLearner, RLCluster)`` for actor + (optional) frozen reference + vanilla rollout on one
    mesh. ``reference`` may be None when ``g.beta == 0`` (Tunix then computes no reference
    log-probabilities). With ``g.loss == "lean"`` the cluster is a
    :class:`~dsa_cast_train.lean_grpo.LeanRLCluster` and the policy loss is
    :func:`~dsa_cast_train.lean_grpo.lean_grpo_loss` (chunked log-probabilities, no extra copy of
    the actor); ``"tunix"`` is Tunix's own cluster and loss."""
    import orbax.checkpoint as ocp
    from tunix.rl import rl_cluster as rl_cluster_lib
    from tunix.rl.grpo import grpo_learner as grpo_lib
    from tunix.sft import metrics_logger

    if g.batch_size % g.micro_batch_size:
        raise ValueError(f"grpo.micro_batch_size ({g.micro_batch_size}) must divide "
                         f"grpo.batch_size ({g.batch_size})")
    if reference is None and g.beta != 0:
        raise ValueError(f"grpo.beta={g.beta} needs a reference model")
    Role = rl_cluster_lib.Role
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=make_optimizer(g),
        eval_every_n_steps=g.eval_every_steps,
        max_steps=g.max_steps,
        mini_batch_size=g.batch_size,
        # None when the whole batch is one micro-batch: any value makes Tunix derive
        # gradient_accumulation_steps and wrap the optimizer in optax.MultiSteps, whose
        # accumulator is one more full copy of the parameters even when it accumulates nothing
        train_micro_batch_size=g.micro_batch_size if g.micro_batch_size < g.batch_size else None,
        checkpoint_root_directory=str(run_dir / CHECKPOINT_DIR),
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_interval_steps=g.save_every_steps, max_to_keep=g.keep_checkpoints,
            enable_async_checkpointing=distributed.async_checkpointing()),
        metrics_logging_options=metrics_logger.MetricsLoggerOptions(log_dir=str(run_dir / TENSORBOARD_DIR)),
        pbar_description="GRPO",
    )
    cluster_config = rl_cluster_lib.ClusterConfig(
        role_to_mesh={Role.ACTOR: mesh, Role.REFERENCE: mesh, Role.ROLLOUT: mesh},
        rollout_engine="vanilla", offload_to_cpu=False, training_config=training,
        rollout_config=rollout_config(g, eos_ids))
    algo = dict(num_generations=g.num_generations, num_iterations=g.num_iterations, beta=g.beta,
                epsilon=g.epsilon)
    if g.loss == "lean":
        from dsa_cast_train import lean_grpo, sampling_model

        sampling_model.enable_last_token_prefill(actor)
        cluster = lean_grpo.LeanRLCluster(actor=actor, reference=reference, tokenizer=tokenizer,
                                          cluster_config=cluster_config, logps_chunk=g.logps_chunk)
        algo_config = lean_grpo.LeanGRPOConfig(**algo, logps_chunk=g.logps_chunk, remat_layers=g.remat_layers)
    else:
        cluster = rl_cluster_lib.RLCluster(actor=actor, reference=reference, tokenizer=tokenizer,
                                           cluster_config=cluster_config)
        algo_config = grpo_lib.GRPOConfig(**algo)
    learner = grpo_lib.GRPOLearner(rl_cluster=cluster, algo_config=algo_config,
                                   reward_fns=list(reward_fns), metric_fns=list(metric_fns))
    return learner, cluster


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens the sampler feeds for ``prompt``: its ids plus the BOS the sampler prepends."""
    ids = tokenizer.EncodeAsIds(prompt)
    return len(ids) + (0 if ids and ids[0] == tokenizer.bos_id() else 1)


def filter_prompts(examples: Sequence[Any], tokenizer, *, max_prompt_length: int, system_prompt: str,
                   prefill: bool) -> tuple[list[Any], int]:
    """Drop examples whose prompt exceeds ``max_prompt_length`` tokens (Tunix does not truncate;
    a longer prompt grows the padded length and can overflow the KV cache). Returns
    ``(kept, dropped_count)``."""
    kept = [ex for ex in examples
            if prompt_length(tokenizer, ex.prompt_text(system_prompt=system_prompt, prefill=prefill))
            <= max_prompt_length]
    return kept, len(examples) - len(kept)


def calc_steps(example: Any) -> int:
    """Calculator steps of an example's reference solution: the ``CALC:`` lines of its DSA answer."""
    return sum(1 for line in example.response.splitlines() if line.lstrip().startswith("CALC:"))


def eval_dataset(held_out: Sequence[Any], tokenizer, g, *, system_prompt: str, prefill: bool):
    """The in-training evaluation set: the first ``grpo.eval_prompts`` held-out prompts that fit
    ``grpo.max_prompt_length``, in whole batches of ``grpo.batch_size`` (None when empty). Tunix
    rolls them out and rewards them (``mode="eval"``) every ``grpo.eval_every_steps`` steps."""
    if g.eval_prompts <= 0:
        return None
    fitting, _ = filter_prompts(held_out, tokenizer, max_prompt_length=g.max_prompt_length,
                                system_prompt=system_prompt, prefill=prefill)
    n = min(g.eval_prompts, len(fitting)) // g.batch_size * g.batch_size
    if n == 0:
        log.warning("no in-training evaluation: %d held-out prompts fit, fewer than grpo.batch_size=%d",
                    len(fitting), g.batch_size)
        return None
    return data.grpo_dataset(fitting[:n], batch_size=g.batch_size, seed=0, system_prompt=system_prompt,
                             prefill=prefill, shuffle=False)


load_examples = train_and_held_out
"""``(train, held-out)`` examples exactly as SFT splits them (kept under its old name; see
:func:`dsa_cast_train.examples.train_and_held_out`), so GRPO never trains on SFT's held-out items."""


# --------------------------------------------------------------------------------------------
# stage entry point
# --------------------------------------------------------------------------------------------


def run(config, run_dir: str | Path, *, overwrite: bool = False) -> GRPOResult:
    """Run GRPO as configured (``config`` is a :class:`~dsa_cast_train.config.PipelineConfig`).

    Resumes from ``<run_dir>/checkpoints/actor`` when it holds a step; a run directory holding
    files of another kind refuses to start unless ``overwrite``.
    """
    t_start = time.perf_counter()
    distributed.initialize()  # multi-host: before anything touches devices or the run directory
    run_path = Path(run_dir)
    with runs.prepare(run_path, "grpo", config, overwrite=overwrite, must_match=RESUME_MUST_MATCH) as rd, \
            runs.logging_to(rd):
        return _run(config, rd.path, rd.path / CHECKPOINT_DIR / ACTOR_SUBDIR, t_start, resumed=rd.resumed)


def _run(config, run_path: Path, ckpt_dir: Path, t_start: float, *, resumed: bool) -> GRPOResult:
    g = config.grpo
    done = models.checkpoint_steps(ckpt_dir)
    resumed_from = done[-1] if done else 0
    metrics_path = run_path / METRICS_FILE
    primary = distributed.is_primary()  # the only process that writes files
    if resumed and primary:
        _drop_records_to_redo(g, run_path, resumed_from)
        log.info("resuming GRPO from actor step %d in %s", resumed_from, ckpt_dir)

    system = system_prompt(config.data)  # as SFT and evaluation build their prompts
    prefill = config.data.prefill_reasoning
    mesh = models.make_mesh(config.mesh.fsdp, config.mesh.tp)
    loaded = models.load(models.without_remat(config.model, "GRPO (the loss uses grpo.remat_layers)"), mesh)
    train_examples, held_out, dropped = _training_prompts(config, loaded.tokenizer, system)

    actor_steps = resumed_from
    if resumed_from < g.max_steps:
        actor, reference = _actor_and_reference(loaded.model, g, resumed_from)
        if distributed.process_count() > 1:
            log.info("GRPO on %d processes: each rolls out the same %d prompts x %d generations per step "
                     "(replicated rollouts: Tunix 0.1.7's sampler takes its prompts as values replicated "
                     "on every process; see docs/multihost.md); process 0 writes the records",
                     distributed.process_count(), g.batch_size, g.num_generations)
        progress = ProgressPrinter(g.max_steps)
        rec_logger = RewardLogger(reward_functions(g.rubric), metrics_path=metrics_path if primary else None,
                                  rubric=g.rubric, rollouts_path=run_path / ROLLOUTS_FILE if primary else None,
                                  prefix=data.PREFILL if prefill else "",
                                  on_record=progress, num_generations=g.num_generations)
        if resumed_from:  # RLCluster restores the newest actor step (model and optimizer): check it first
            digests.verify_newest(ckpt_dir)
        learner, cluster = build_learner(actor=actor, reference=reference, tokenizer=loaded.tokenizer,
                                         mesh=mesh, g=g, eos_ids=loaded.eos_ids, run_dir=run_path,
                                         reward_fns=rec_logger.reward_fns, metric_fns=[rec_logger.metric_fn])
        rec_logger.step_fn = lambda: cluster.global_steps
        if primary:  # each committed step gets its digests (process 0 writes the files)
            digests.track(cluster.actor_trainer.checkpoint_manager, ckpt_dir)
        cluster.actor_trainer.with_training_hooks(guards.finite_hooks("GRPO"))  # stop on a NaN/inf loss
        if distributed.process_count() > 1:  # same order of computations on every process
            learner.executor = distributed.InlineExecutor()
        train_ds = data.grpo_dataset(train_examples, batch_size=g.batch_size, seed=config.data.shuffle_seed,
                                     system_prompt=system, prefill=prefill, epochs=None)
        eval_ds = eval_dataset(held_out, loaded.tokenizer, g, system_prompt=system, prefill=prefill)
        distributed.watch_preemption(cluster.actor_trainer.checkpoint_manager)
        _learn(learner, cluster, train_ds, eval_ds, mesh, progress, ckpt_dir, g, resumed_from, primary)
        actor_steps = int(cluster.actor_trainer.train_steps)
        losses = _actor_losses(cluster)
        if losses:  # on every process: its log shows what it computed (multi-host: the same everywhere)
            log.info("actor loss per update: %s", " ".join(f"{x:.6g}" for x in losses))
    else:
        log.info("GRPO already finished (actor step %d >= grpo.max_steps=%d)", resumed_from, g.max_steps)

    curve = plot_reward_curve(metrics_path, run_path / REWARD_CURVE_FILE) if primary else None
    train_recs = read_metrics(metrics_path, "train")
    result = GRPOResult(run_dir=run_path, checkpoint_dir=ckpt_dir, actor_steps=actor_steps,
                        resumed_from=resumed_from, prompts=len(train_examples), dropped_prompts=dropped,
                        metrics_path=metrics_path, reward_curve=curve,
                        seconds=time.perf_counter() - t_start, last=train_recs[-1] if train_recs else None)
    if primary:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(result).items()}
        runs.write_json(run_path / SUMMARY_FILE, summary)
    return result


def _drop_records_to_redo(g, run_path: Path, resumed_from: int) -> None:
    """Before a resume: records logged after the newest checkpoint belong to steps that will be
    redone, so they leave ``metrics.jsonl`` and ``rollouts.jsonl`` (see :func:`truncate_records`)."""
    redo_eval = resumed_from < g.max_steps and g.eval_prompts > 0 and resumed_from % g.eval_every_steps == 0
    for p in (run_path / METRICS_FILE, run_path / ROLLOUTS_FILE):
        n = truncate_records(p, _global_step_of(resumed_from, g), redo_eval=redo_eval)
        if n:
            log.info("resume: dropped %d records of %s logged after step %d", n, p.name, resumed_from)


def _training_prompts(config, tokenizer, system: str) -> tuple[list[Any], list[Any], int]:
    """``(train, held_out, dropped)``: SFT's split, the training prompts cut to those that fit
    ``grpo.max_prompt_length`` (``dropped`` left out) and, with ``grpo.max_calc_steps``, to the
    problems with at most that many calculator steps; fewer than one batch is a ``ValueError``."""
    g = config.grpo
    train_examples, held_out = train_and_held_out(config.data)
    train_examples, dropped = filter_prompts(train_examples, tokenizer, max_prompt_length=g.max_prompt_length,
                                             system_prompt=system, prefill=config.data.prefill_reasoning)
    if dropped:
        log.warning("dropped %d training prompts longer than grpo.max_prompt_length=%d tokens",
                    dropped, g.max_prompt_length)
    if g.max_calc_steps:
        before = len(train_examples)
        train_examples = [ex for ex in train_examples if calc_steps(ex) <= g.max_calc_steps]
        log.info("grpo.max_calc_steps=%d: %d of %d training prompts kept", g.max_calc_steps,
                 len(train_examples), before)
    if len(train_examples) < g.batch_size:
        raise ValueError(f"only {len(train_examples)} training prompts fit grpo.max_prompt_length="
                         f"{g.max_prompt_length}; need at least grpo.batch_size={g.batch_size}")
    return train_examples, held_out, dropped


def _actor_and_reference(model, g, resumed_from: int) -> tuple[Any, Any]:
    """The actor (``model``, from ``grpo.init_checkpoint`` on a fresh run) and the frozen reference
    (a copy of the base weights, or of the init checkpoint with ``grpo.reference = "init"``; None at
    ``grpo.beta`` 0, where nothing reads it)."""
    actor = model
    reference = copy_model(actor) if g.beta != 0 else None
    if g.init_checkpoint and not resumed_from:
        root, step = init_actor(actor, g.init_checkpoint)
        log.info("actor initialised from %s (step %d)", root, step)
    if reference is not None and g.init_checkpoint and g.reference == "init":
        # KL toward the actor's starting point (e.g. the SFT model) rather than the base model,
        # which never wrote the format; restored separately so a resumed run gets it too
        root, step = init_actor(reference, g.init_checkpoint)
        log.info("reference initialised from %s (step %d)", root, step)
    return actor, reference


def _learn(learner, cluster, train_ds, eval_ds, mesh, progress: ProgressPrinter, ckpt_dir: Path, g,
           resumed_from: int, primary: bool) -> None:
    """``learner.train`` on the mesh; every committed actor step gets its digests, also when a
    SIGTERM stops it (re-raised as ``Preempted``) or a non-finite loss does (the steps from the bad
    one on are discarded first, so the newest checkpoint is the last good one)."""
    with mesh:
        try:
            learner.train(train_ds, eval_ds)
        except distributed.Preempted:
            cluster.close()  # commits the checkpoint, flushes Tunix's metrics
            progress.flush()
            if primary:
                digests.record_new(ckpt_dir)
            log.warning("SIGTERM: stopped after actor checkpoint step %d of %d; the same command resumes",
                        int(cluster.actor_trainer.train_steps), g.max_steps)
            raise
        except guards.NonFiniteError as err:  # keep the last good checkpoint as the newest one
            if primary:
                guards.discard_checkpoints_from(cluster.actor_trainer.checkpoint_manager, ckpt_dir, err,
                                                resumed_from)
                digests.record_new(ckpt_dir)
            raise
    if primary:
        digests.record_new(ckpt_dir)
    progress.flush()


def _actor_losses(cluster) -> list[float]:
    """The actor's loss of every update of this start, from Tunix's in-process metric history."""
    logger = cluster.actor_trainer.metrics_logger
    if not logger.metric_exists("actor", "loss", "train"):
        return []
    return [float(x) for x in logger.get_metric_history("actor", "loss", "train")]


def init_actor(actor, init_checkpoint: str | Path) -> tuple[Path, int]:
    """Restore ``actor``'s parameters from ``grpo.init_checkpoint``; returns ``(absolute root, step)``.

    The path is made absolute first (``~`` expanded, resolved against the working directory):
    orbax refuses a relative checkpoint path ("Checkpoint path should be absolute")."""
    root = Path(init_checkpoint).expanduser().resolve()
    return root, models.restore_params(actor, root)


def _global_step_of(actor_step: int, g) -> int:
    """Global steps behind ``actor_step`` optimizer updates: each global step is one mini-batch
    (``mini_batch_size == batch_size``) updated ``num_iterations`` times."""
    return actor_step // max(1, g.num_iterations)


class ProgressPrinter:
    """Turns :class:`RewardLogger` records into log lines: one per training step (reward, format,
    accuracy, groups with signal, the components, seconds per step and the time left), and one
    per in-training evaluation (its batches pooled, printed when the next training step arrives
    or at :meth:`flush`)."""

    def __init__(self, max_steps: int, first_step: int = 0, clock: Callable[[], float] = time.monotonic):
        self.max_steps = max_steps
        self.first_step = first_step
        self.clock = clock
        self._t0: float | None = None
        self._eval: list[dict] = []

    def __call__(self, rec: dict) -> None:
        if rec["mode"] != "train":
            self._eval.append(rec)
            return
        self.flush()
        now = self.clock()
        if self._t0 is None:
            self._t0, self._first = now, rec["step"]
        done = rec["step"] - self._first
        pace = ""
        if done > 0:
            per = (now - self._t0) / done
            left = per * (self.max_steps - rec["step"] + 1)
            pace = f" | {per:.0f} s/step, ~{_duration(left)} left"
        acc = rec["accuracy"]
        comps = " ".join(f"{k.removeprefix('dsa_cast_')}={v:.2f}" for k, v in sorted(rec["components"].items()))
        signal = "" if rec.get("groups") is None else f", signal in {rec['groups_with_signal']}/{rec['groups']} groups"
        log.info("[train] step %d/%d: reward %.3f, format %.2f, accuracy %s%s%s | %s", rec["step"], self.max_steps,
                 rec["reward_mean"], rec["format_adherence"], "n/a" if acc is None else f"{acc:.2f}", signal,
                 pace, comps)

    def flush(self) -> None:
        """Print the pooled evaluation line, if evaluation records are waiting."""
        if not self._eval:
            return
        recs, self._eval = self._eval, []
        n = sum(r["n"] for r in recs)
        mean = sum(r["reward_mean"] * r["n"] for r in recs) / n if n else 0.0
        fmt = sum(r["format_adherence"] * r["n"] for r in recs) / n if n else 0.0
        judged = sum(r.get("graded_with_reference") or 0 for r in recs)
        acc = (sum((r["accuracy"] or 0.0) * (r.get("graded_with_reference") or 0) for r in recs) / judged
               if judged else None)
        log.info("[eval] after %d actor steps, %d held-out completions: reward %.3f, format %.2f, accuracy %s",
                 recs[0]["step"], n, mean, fmt, "n/a" if acc is None else f"{acc:.2f}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


RESUME_MUST_MATCH = ("model", "data", "grpo.rubric", "grpo.batch_size", "grpo.num_generations",
                     "grpo.num_iterations", "grpo.init_checkpoint", "grpo.reference")
"""Fields that may not change when a GRPO run directory is resumed (they change what the
checkpoint or the data position means); ``grpo.max_steps`` may grow, for instance."""


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = cli.stage_parser("grpo", __doc__, example="--grpo.max_steps 50",
                         run_dir_help="run directory (resumed if it holds a GRPO checkpoint)",
                         overwrite_help="start fresh in a non-empty run directory")
    p.add_argument("--rubric", default=None, help="dsa_cast rubric for the rewards (e.g. dsa-cast, seed)")
    p.add_argument("--init-checkpoint", default=None, help="SFT checkpoint root the actor starts from")
    return p


def _flag_overrides(args: argparse.Namespace) -> list[tuple[str, object]]:
    """``--rubric`` and ``--init-checkpoint`` as config overrides."""
    pairs: list[tuple[str, object]] = []
    if args.rubric:
        pairs.append(("grpo.rubric", args.rubric))
    if args.init_checkpoint:
        pairs.append(("grpo.init_checkpoint", args.init_checkpoint))
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    invocation = cli.resolve(parser, argv, _flag_overrides)
    if invocation is None:
        return 0
    # ValueError: a resumed run whose rubric or reward set differs from the checkpoint's.
    result = cli.execute(run, invocation, extra_errors=(ValueError,))
    if result is None:
        return 2
    last = result.last or {}
    print(f"GRPO: {result.actor_steps} actor steps (resumed from {result.resumed_from}), "
          f"{result.seconds:.1f}s, last reward {last.get('reward_mean')}, checkpoints {result.checkpoint_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
