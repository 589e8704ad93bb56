"""Full-parameter SFT of Gemma 3 on DSA-format data with Tunix ``PeftTrainer``.

``python -m dsa_cast_train.sft --preset tiny --run-dir runs/sft-tiny`` or ``run(config, run_dir)``.

The optimizer is the seed notebook's: linear warm-up then cosine decay, global-norm clipping,
Adam with decoupled weight decay (``optax.adamw``), wrapped by Tunix in ``optax.MultiSteps``
for gradient accumulation. The loss is Tunix's masked next-token NLL over response tokens;
positions and the causal attention mask come from the explicit padding mask, never from
token id 0. Checkpoints (orbax, model + optimizer) go to ``<run_dir>/checkpoints``; a second
start with the same directory resumes from the newest one (see :mod:`dsa_cast_train.runs`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa_cast import io, score
from dsa_cast_train import cli, data, digests, distributed, evaluate, guards, models, optim, runs
from dsa_cast_train import config as config_lib
from dsa_cast_train.examples import data_source, load_examples, system_prompt, train_and_held_out

__all__ = [  # data_source, load_examples, system_prompt, train_and_held_out: re-exported from .examples
    "SFTResult", "build_optimizer", "check_tunix_private_hooks", "data_source", "learning_rate_schedule",
    "load_examples", "main", "make_trainer", "model_inputs", "run", "sample_and_grade", "system_prompt",
    "train_and_held_out", "write_loss_curve",
]

log = logging.getLogger("dsa_cast_train.sft")

RESULT_FILE = "result.json"
SAMPLES_FILE = "samples.jsonl"
DATA_STATS_FILE = "data_stats.json"
LOSS_CURVE_FILE = "loss_curve.png"

StepCallback = Callable[[int, float], None]
"""Called after every optimizer update with ``(step, loss)`` (1-based step)."""


@dataclass(frozen=True)
class SFTResult:
    """What an SFT start did (also written to ``<run_dir>/result.json``)."""

    run_dir: str
    checkpoint_dir: str
    resumed: bool
    start_step: int
    """Update count restored from the checkpoint (0 for a fresh run)."""
    final_step: int
    train_losses: tuple[float, ...]
    """Loss of every update made by this start, in order."""
    eval_losses: tuple[tuple[int, float], ...]
    """``(step, mean eval loss)`` of every eval pass of this start (step 0 = before training)."""
    train_examples: int
    eval_examples: int
    data_stats: dict[str, Any]
    """Tokenisation counts (kept, truncated, dropped, token lengths) of the training set."""
    train_seconds: float
    """Wall time of the training loop (compilation included)."""
    total_seconds: float
    """Wall time of the whole start (loading, data, training, samples)."""
    tokens: int
    """Real (non-padding) tokens fed to the model by this start."""
    tokens_per_second: float
    """Steady-state throughput: tokens / time after the first (compiling) update."""
    samples_file: str | None = None
    sample_mean_total: float | None = None
    """Mean ``dsa_cast`` grade total of the after-training samples."""
    samples: tuple[dict[str, Any], ...] = field(default=(), repr=False)


# ----------------------------------------------------------------------------------------
# data


class _CountingIterable:
    """Wraps a batch iterable, recording the real-token count of every batch it yields;
    ``to_global`` turns each batch into what the trainer gets (multi-host: global arrays built
    from this process's rows, see :func:`distributed.global_batch`)."""

    def __init__(self, batches: Any, to_global: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self._batches = batches
        self._to_global = to_global
        self.counts: list[int] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._batches:
            self.counts.append(int(batch["pad_mask"].sum()))
            yield self._to_global(batch) if self._to_global is not None else batch


# ----------------------------------------------------------------------------------------
# optimizer and model inputs


learning_rate_schedule = optim.learning_rate_schedule
"""Warm-up then cosine schedule (:func:`dsa_cast_train.optim.learning_rate_schedule`, shared with GRPO)."""


def build_optimizer(cfg: config_lib.SFTConfig):
    """Global-norm clip, then AdamW (Adam + decoupled weight decay) on the warm-up/cosine schedule
    (:func:`dsa_cast_train.optim.build`, the builder GRPO uses too)."""
    return optim.build(cfg)


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """Tunix loss inputs from a data batch: positions and causal mask from ``pad_mask``."""
    from tunix.sft import utils as sft_utils

    pad_mask = batch["pad_mask"]
    return {
        "input_tokens": batch["input_tokens"],
        "input_mask": batch["input_mask"],
        "positions": sft_utils.build_positions_from_mask(pad_mask),
        "attention_mask": sft_utils.make_causal_attn_mask(pad_mask),
    }


# ----------------------------------------------------------------------------------------
# trainer


TUNIX_PRIVATE_HOOKS = {
    "_tqdm_train_metrics": "property overridden: the progress bar shows loss and tokens/s",
    "_write_train_metrics": "method overridden: a checkpointed step's metrics are written before the save",
}
"""Private ``tunix.sft.peft_trainer.PeftTrainer`` members that :func:`_trainer_class` overrides."""
TUNIX_PRIVATE_STATE = ("_prev_buffered_train_metrics", "_train_steps")
"""Private ``PeftTrainer`` attributes (set in its ``__init__``) that the override reads."""


def check_tunix_private_hooks(trainer_class: type | None = None) -> None:
    """Raise ``RuntimeError`` naming the member when ``PeftTrainer`` (or ``trainer_class``) lacks a
    private name that the SFT trainer overrides or reads (:data:`TUNIX_PRIVATE_HOOKS`,
    :data:`TUNIX_PRIVATE_STATE`). They exist in the pinned google-tunix 0.1.7; a Tunix that renamed
    one would otherwise silently drop the override (no tokens/s, metrics lost on a kill)."""
    if trainer_class is None:
        from tunix.sft import peft_trainer

        trainer_class = peft_trainer.PeftTrainer
    where = f"{trainer_class.__module__}.{trainer_class.__qualname__}"
    fix = ("dsa_cast_train.sft._trainer_class relies on it; pin google-tunix==0.1.7 or port the "
           "override to this Tunix")
    for name, why in TUNIX_PRIVATE_HOOKS.items():
        if not hasattr(trainer_class, name):
            raise RuntimeError(f"{where} has no {name} ({why}): {fix}")
    if not isinstance(inspect.getattr_static(trainer_class, "_tqdm_train_metrics"), property):
        raise RuntimeError(f"{where}._tqdm_train_metrics is no longer a property: {fix}")
    try:
        init = inspect.getsource(trainer_class.__init__)
    except (OSError, TypeError):  # no source shipped: the class members above are all we can check
        return
    for name in TUNIX_PRIVATE_STATE:
        if f"self.{name}" not in init:
            raise RuntimeError(f"{where}.__init__ no longer sets self.{name} (read by the SFT trainer): {fix}")


def _trainer_class(save_every: int):
    from tunix.sft import peft_trainer

    check_tunix_private_hooks(peft_trainer.PeftTrainer)

    class SFTTrainer(peft_trainer.PeftTrainer):
        """``PeftTrainer`` whose progress bar shows loss and tokens/s, and whose metrics of a step
        that is about to be checkpointed are written before the checkpoint (Tunix writes a step's
        metrics during the next step: a kill right after the save would lose them for good, as
        a resume does not redo a checkpointed step)."""

        @property
        def _tqdm_train_metrics(self) -> list[str]:
            extra = ["tokens_per_second"] if self.metrics_logger.metric_exists(
                self.metrics_prefix, "tokens_per_second", "train") else []
            return ["loss", *extra]

        def _write_train_metrics(self) -> None:
            super()._write_train_metrics()
            if self._prev_buffered_train_metrics is not None and self._train_steps % save_every == 0:
                super()._write_train_metrics()  # this step's too, now

    return SFTTrainer


def _progress_hooks_class():
    from tunix.sft import hooks

    class ProgressHooks(hooks.TrainingHooks):
        """Per-update bookkeeping: metrics JSONL, tokens/s, log lines, user callback."""

        def __init__(self, *, counter: _CountingIterable, accumulation: int, schedule: Any,
                     writer: runs.MetricsWriter, max_steps: int, log_every: int,
                     on_step: StepCallback | None):
            self.counter, self.accumulation, self.schedule = counter, accumulation, schedule
            self.writer, self.max_steps, self.log_every, self.on_step = writer, max_steps, log_every, on_step
            self.losses: list[float] = []
            self.eval_losses: list[tuple[int, float]] = []
            self.start_step = 0
            self.t_start = self.t_last = self.t_first = 0.0
            self.tokens = 0
            self.steady_tokens = 0

        def on_train_start(self, train_ctx: Any) -> None:
            self.start_step = int(train_ctx.train_steps)
            self.t_start = self.t_last = time.perf_counter()

        def on_train_end(self, train_ctx: Any) -> None:
            pass

        def on_train_step_start(self, train_ctx: Any) -> None:
            pass

        def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
            now = time.perf_counter()
            step = int(train_step)
            first, last = (step - 1) * self.accumulation, step * self.accumulation
            tokens = int(sum(self.counter.counts[first:last]))
            seconds = max(now - self.t_last, 1e-9)
            self.t_last = now
            self.tokens += tokens
            if step == self.start_step + 1:
                self.t_first = now  # the first update includes compilation
            else:
                self.steady_tokens += tokens
            loss = float(train_loss)
            self.losses.append(loss)
            rate = tokens / seconds
            grad_norm = _last_metric(train_ctx, "grad_norm", "train")
            lr = float(self.schedule(step - 1))
            train_ctx.metrics_logger.log("", "tokens_per_second", rate, "train", step)
            train_ctx.metrics_logger.log("", "learning_rate", lr, "train", step)
            self.writer.write({"step": step, "split": "train", "loss": loss, "grad_norm": grad_norm,
                               "learning_rate": lr, "tokens": tokens, "tokens_per_second": round(rate, 1),
                               "seconds": round(seconds, 4)})
            guards.check("SFT", step, loss=loss, grad_norm=grad_norm)  # before this update is saved
            if step % self.log_every == 0 or step == self.max_steps or step == self.start_step + 1:
                log.info("step %d/%d  loss %.4f  lr %.3g  grad_norm %s  %.0f tokens/s  %s", step,
                         self.max_steps, loss, lr, "n/a" if grad_norm is None else f"{grad_norm:.3g}", rate,
                         self.eta(step, now))
            if self.on_step is not None:
                self.on_step(step, loss)

        def on_eval_step_start(self, train_ctx: Any) -> None:
            pass

        def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
            step = int(train_ctx.train_steps)
            mean = _last_metric(train_ctx, "loss", "eval")
            if mean is None:
                return
            self.eval_losses.append((step, mean))
            self.writer.write({"step": step, "split": "eval", "loss": mean})
            log.info("eval at step %d: loss %.4f", step, mean)

        def eta(self, step: int, now: float) -> str:
            """``1.2 s/step, 0:24 left``: the pace after the first (compiling) update, else so far."""
            done = step - self.start_step
            if done > 1:
                per_step = (now - self.t_first) / (done - 1)
            else:
                per_step = now - self.t_start
            left = max(self.max_steps - step, 0) * per_step
            return f"{per_step:.2f} s/step, {int(left // 60)}:{int(left % 60):02d} left"

        def steady_rate(self) -> float:
            span = self.t_last - self.t_first
            if span > 0 and self.steady_tokens:
                return self.steady_tokens / span
            span = self.t_last - self.t_start
            return self.tokens / span if span > 0 else 0.0

    return ProgressHooks


def _last_metric(trainer: Any, name: str, mode: str) -> float | None:
    logger = trainer.metrics_logger
    if not logger.metric_exists("", name, mode):
        return None
    return float(logger.get_metric_history("", name, mode)[-1])


def _on_interval(interval: int, step: int, last_saved_step: int | None) -> bool:
    """Orbax save decision: every ``interval`` updates (orbax's default would also save step 1;
    preemption saves and the trainer's final save still happen)."""
    return step % interval == 0


def make_trainer(model: Any, cfg: config_lib.SFTConfig, checkpoint_dir: str | Path,
                 tensorboard_dir: str | Path | None = None):
    """A full-parameter ``PeftTrainer`` with our optimizer, checkpointing and input function.

    Constructing it on a non-empty ``checkpoint_dir`` restores model and optimizer from the
    newest checkpoint (Tunix behaviour); ``trainer.train_steps`` then says where it resumes.
    """
    import orbax.checkpoint as ocp
    from tunix.sft import metrics_logger, peft_trainer

    logging_options = None
    if tensorboard_dir is not None:
        tb_dir = str(tensorboard_dir)
        logging_options = metrics_logger.MetricsLoggerOptions(
            log_dir=tb_dir, flush_every_n_steps=cfg.log_every_steps,
            backend_kwargs={"custom_backend": [
                lambda: metrics_logger.TensorboardBackend(log_dir=tb_dir, flush_every_n_steps=cfg.log_every_steps)]})
    training_config = peft_trainer.TrainingConfig(
        eval_every_n_steps=cfg.eval_every_steps,
        max_steps=cfg.max_steps,
        gradient_accumulation_steps=cfg.grad_accumulation_steps if cfg.grad_accumulation_steps > 1 else None,
        checkpoint_root_directory=str(checkpoint_dir),
        checkpointing_options=ocp.CheckpointManagerOptions(
            should_save_fn=functools.partial(_on_interval, cfg.save_every_steps),
            max_to_keep=cfg.keep_checkpoints, enable_async_checkpointing=distributed.async_checkpointing()),
        metrics_logging_options=logging_options,
        pbar_description="SFT",
    )
    trainer = _trainer_class(cfg.save_every_steps)(model, build_optimizer(cfg), training_config)
    if distributed.is_primary():  # each committed step gets its digests (process 0 writes files)
        digests.track(trainer.checkpoint_manager, checkpoint_dir)
    return trainer.with_gen_model_input_fn(model_inputs)


# ----------------------------------------------------------------------------------------
# samples


def grade_to_dict(grade: Any) -> dict[str, Any]:
    """JSON-ready fields of a ``dsa_cast.score.Grade``."""
    return {"total": float(grade.total), "max_total": float(getattr(grade, "max_total", float("nan"))),
            "components": {k: float(v) for k, v in dict(grade.components).items()},
            "correct": grade.correct, "predicted": grade.predicted, "issues": list(grade.issues)}


def sample_and_grade(loaded: Any, examples: Sequence[Any], *, max_new_tokens: int, max_prompt_length: int,
                     system: str, prefill: bool, rubric: str = "dsa-cast") -> list[dict[str, Any]]:
    """Greedy completions for ``examples``, graded against their answers with ``dsa_cast``."""
    if not examples:
        return []
    prompts = [ex.prompt_text(system_prompt=system, prefill=prefill) for ex in examples]
    texts = evaluate.generate(loaded, prompts, max_new_tokens=max_new_tokens,
                              max_prompt_length=max_prompt_length, batch_size=len(prompts))
    out = []
    for ex, prompt, text in zip(examples, prompts, texts):
        completion = evaluate.completion_for_grading(text, prefill)
        grade = score.grade(completion, ex.answer, rubric=rubric)
        out.append({"id": ex.id, "question": ex.question, "answer": ex.answer, "prompt": prompt,
                    "completion": completion, "grade": grade_to_dict(grade)})
    return out


# ----------------------------------------------------------------------------------------
# run


def run(config: config_lib.PipelineConfig, run_dir: str | Path, *, overwrite: bool = False,
        on_step: StepCallback | None = None) -> SFTResult:
    """Train (or resume) SFT into ``run_dir`` and return what happened.

    Multi-host: every process calls this with the same arguments (``jax.distributed`` started
    first, before the run directory is touched); process 0 writes the files. A SIGTERM under
    ``jax.distributed`` stops training after the checkpoint of JAX's preemption sync step and
    raises :class:`distributed.Preempted`.
    """
    t0 = time.perf_counter()
    distributed.initialize()  # before the run directory is touched (multi-host)
    with runs.prepare(run_dir, "sft", config, overwrite=overwrite, resumable=True,
                      must_match=("model", "data", "sft.micro_batch_size",
                                  "sft.grad_accumulation_steps")) as run_info:
        if run_info.resumed and distributed.is_primary():
            _drop_records_to_redo(run_info)
        with runs.logging_to(run_info), runs.metrics_writer(run_info) as writer:
            log.info("%s SFT in %s (config: %s)", "resuming" if run_info.resumed else "starting",
                     run_info.path, run_info.config_file.name)
            return _run(config, run_info, writer, on_step, t0)


def _drop_records_to_redo(run_info: runs.RunDir) -> None:
    """Before a resume from checkpoint step R: drop the train records after R and the eval records
    from R on (the resumed trainer evaluates at R first, then redoes R+1...), so that each (split,
    step) appears once in ``metrics.jsonl``."""
    steps = models.checkpoint_steps(run_info.checkpoints)
    r = steps[-1] if steps else 0
    n = runs.truncate_records(run_info.metrics, lambda rec: runs.step_of(rec) < r or (
        runs.step_of(rec) == r and rec.get("split") != "eval"))
    if n:
        log.info("resume: dropped %d records of %s logged after step %d", n, run_info.metrics.name, r)


def _run(config: config_lib.PipelineConfig, run_info: runs.RunDir, writer: runs.MetricsWriter,
         on_step: StepCallback | None, t0: float) -> SFTResult:
    cfg = config.sft
    primary = distributed.is_primary()
    mesh = models.make_mesh(config.mesh.fsdp, config.mesh.tp)
    to_global = _batch_placement(cfg, mesh)
    loaded = models.load(config.model, mesh)
    system = system_prompt(config.data)
    sft_data = _prepare_data(config, loaded.tokenizer, system, to_global, run_info, primary)

    trainer = _open_trainer(loaded.model, cfg, run_info)
    start_step = int(trainer.train_steps)
    if run_info.resumed:
        log.info("restored checkpoint step %d of %d", start_step, cfg.max_steps)
    counter = _CountingIterable(sft_data.train_ds, to_global)
    hooks = _progress_hooks_class()(
        counter=counter, accumulation=cfg.grad_accumulation_steps,
        schedule=optim.schedule_of(cfg),  # the one build_optimizer uses, for the logged learning rate
        writer=writer, max_steps=cfg.max_steps, log_every=cfg.log_every_steps, on_step=on_step)
    trainer.with_training_hooks(hooks)
    if start_step < cfg.max_steps:
        log.info("SFT steps %d -> %d: compiling the train step%s (first step only)",
                 start_step, cfg.max_steps, " and the eval step" if sft_data.eval_batches else "")
    t_train = time.perf_counter()
    _train(trainer, counter, sft_data.eval_batches, mesh, run_info, cfg, start_step, primary)
    train_seconds = time.perf_counter() - t_train
    final_step = int(trainer.train_steps)
    rate = hooks.steady_rate()
    log.info("trained steps %d -> %d in %.1f s, %d tokens, %.0f tokens/s (after the first update)",
             start_step, final_step, train_seconds, hooks.tokens, rate)

    samples, samples_file = _samples(config, loaded, sft_data.held_out, system, mesh, run_info, primary)
    mean_total = sum(s["grade"]["total"] for s in samples) / len(samples) if samples else None
    result = SFTResult(
        run_dir=str(run_info.path), checkpoint_dir=str(run_info.checkpoints), resumed=run_info.resumed,
        start_step=start_step, final_step=final_step, train_losses=tuple(hooks.losses),
        eval_losses=tuple(hooks.eval_losses), train_examples=len(sft_data.train_examples),
        eval_examples=len(sft_data.held_out), data_stats=sft_data.stats, train_seconds=round(train_seconds, 3),
        total_seconds=round(time.perf_counter() - t0, 3), tokens=hooks.tokens,
        tokens_per_second=round(rate, 1), samples_file=samples_file, sample_mean_total=mean_total,
        samples=tuple(samples))
    if primary:
        runs.write_json(run_info.path / RESULT_FILE, _result_dict(result))
        write_loss_curve(run_info.metrics, run_info.path / LOSS_CURVE_FILE, title=config.name)
    return result


def _batch_placement(cfg: config_lib.SFTConfig, mesh: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What each host batch becomes before the trainer sees it: itself on one process (Tunix shards
    it), else the global array of which this process holds its rows."""
    layout = None
    if distributed.process_count() > 1:
        # every process reads the same global batches (so the run equals a single-process one) and
        # hands JAX the rows its devices hold
        layout = distributed.batch_layout(mesh, cfg.micro_batch_size, "sft.micro_batch_size")
        log.info("multi-host SFT: %d processes; this one holds %d of the %d rows of every batch",
                 distributed.process_count(), len(layout.rows), layout.batch_size)
    elif cfg.micro_batch_size % mesh.shape["fsdp"]:
        log.warning("sft.micro_batch_size %d is not a multiple of mesh fsdp %d: batches are replicated",
                    cfg.micro_batch_size, mesh.shape["fsdp"])

    def to_global(batch: dict[str, Any]) -> dict[str, Any]:
        return distributed.global_batch(batch, mesh, layout) if layout else batch

    return to_global


@dataclass(frozen=True)
class _SFTData:
    train_examples: list[Any]
    held_out: list[Any]
    train_ds: Any
    """Endless shuffled micro-batches of the training examples."""
    stats: dict[str, Any]
    """Tokenisation counts of the training set (``data_stats.json`` ``train``)."""
    eval_batches: list[dict[str, Any]] | None
    """Up to ``sft.eval_batches`` held-out micro-batches; None when fewer than one batch is held out."""


def _prepare_data(config: config_lib.PipelineConfig, tokenizer: Any, system: str,
                  to_global: Callable[[dict[str, Any]], dict[str, Any]], run_info: runs.RunDir,
                  primary: bool) -> _SFTData:
    """Split, tokenise and batch the training and held-out examples; ``data_stats.json`` (process 0)."""
    cfg, dcfg = config.sft, config.data
    train_examples, held_out = train_and_held_out(dcfg)  # the split GRPO trains on too
    source = data_source(dcfg, ("train",))
    log.info("data: %s %s %s%s", source["kind"], source["name"], source["location"],
             "".join(f", {split} sha256 {d}" for split, d in source["sha256"].items()))
    train_ds, stats = data.sft_dataset(
        train_examples, tokenizer, max_length=dcfg.max_length, batch_size=cfg.micro_batch_size,
        seed=dcfg.shuffle_seed, epochs=None, policy=dcfg.overlength, system_prompt=system)
    stats_dict = stats.as_dict()
    if primary:
        runs.write_json(run_info.path / DATA_STATS_FILE, {"train": stats_dict})
    log.info("training data: %d examples, %d kept, %d truncated, %d dropped over %d tokens "
             "(mean %.0f, max %d tokens), %d held out for eval",
             stats.total, stats.kept, stats.truncated, stats.dropped, dcfg.max_length,
             stats.mean_tokens, stats.max_tokens, len(held_out))
    eval_batches = None
    if held_out:
        if len(held_out) >= cfg.micro_batch_size:
            eval_ds, eval_stats = data.sft_dataset(
                held_out, tokenizer, max_length=dcfg.max_length, batch_size=cfg.micro_batch_size,
                seed=0, epochs=1, shuffle=False, policy=dcfg.overlength, system_prompt=system)
            eval_batches = [to_global(eval_ds[i]) for i in range(min(len(eval_ds), cfg.eval_batches))]
            if primary:
                runs.write_json(run_info.path / DATA_STATS_FILE, {"train": stats_dict, "eval": eval_stats.as_dict()})
        else:
            log.warning("only %d held-out examples, fewer than one batch of %d: no eval loss",
                        len(held_out), cfg.micro_batch_size)
    return _SFTData(train_examples, held_out, train_ds, stats_dict, eval_batches)


def _open_trainer(model: Any, cfg: config_lib.SFTConfig, run_info: runs.RunDir):
    """:func:`make_trainer` on the run's checkpoints (which restores the newest step on a resume,
    after its digests are verified); an unreadable newest step is a ``CheckpointError``."""
    if run_info.resumed:  # the trainer restores the newest step (model and optimizer): check it first
        digests.verify_newest(run_info.checkpoints)
    try:
        trainer = make_trainer(model, cfg, run_info.checkpoints, run_info.tensorboard)
    except Exception as exc:  # orbax cannot read the step it restores (a truncated checkpoint)
        if not (run_info.resumed and models.checkpoint_steps(run_info.checkpoints)):
            raise
        raise digests.CheckpointError(f"{run_info.checkpoints}: cannot resume from the newest checkpoint: "
                                      f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    distributed.watch_preemption(trainer.checkpoint_manager)
    return trainer


def _train(trainer: Any, batches: _CountingIterable, eval_batches: list[dict[str, Any]] | None, mesh: Any,
           run_info: runs.RunDir, cfg: config_lib.SFTConfig, start_step: int, primary: bool) -> None:
    """``trainer.train`` on the mesh; every committed step gets its digests, also when a SIGTERM
    stops it (re-raised as ``Preempted``) or a non-finite loss does (the steps from the bad one on
    are discarded first, so the newest checkpoint is the last good one)."""
    with mesh:
        try:
            trainer.train(batches, eval_batches)
        except distributed.Preempted:
            trainer.close()  # the last metrics record, the checkpoint committed, files closed
            if primary:
                digests.record_new(run_info.checkpoints)
            log.warning("SIGTERM: stopped after checkpoint step %d of %d; the same command resumes",
                        int(trainer.train_steps), cfg.max_steps)
            raise
        except guards.NonFiniteError as err:  # keep the last good checkpoint as the newest one
            if primary:
                guards.discard_checkpoints_from(trainer.checkpoint_manager, run_info.checkpoints, err, start_step)
                digests.record_new(run_info.checkpoints)
            raise
    if primary:
        digests.record_new(run_info.checkpoints)


def _samples(config: config_lib.PipelineConfig, loaded: Any, held_out: Sequence[Any], system: str, mesh: Any,
             run_info: runs.RunDir, primary: bool) -> tuple[list[dict[str, Any]], str | None]:
    """Greedy samples of the first ``sft.num_samples`` held-out items, graded and logged, and
    ``samples.jsonl`` (process 0): ``(samples, file or None)``."""
    cfg = config.sft
    if not (cfg.num_samples and held_out):
        return [], None
    with mesh:
        samples = sample_and_grade(
            loaded, held_out[: cfg.num_samples], max_new_tokens=cfg.sample_max_new_tokens,
            max_prompt_length=config.eval.max_prompt_length, system=system,
            prefill=config.data.prefill_reasoning, rubric=config.eval.rubric)
    samples_file = None
    if primary:
        samples_file = str(run_info.path / SAMPLES_FILE)
        runs.write_jsonl(samples_file, samples)
    for s in samples:
        log.info("sample %s: total %.3f correct %s predicted %r issues %s", s["id"], s["grade"]["total"],
                 s["grade"]["correct"], s["grade"]["predicted"], s["grade"]["issues"][:4])
    return samples, samples_file


def write_loss_curve(metrics_path: str | Path, out_path: str | Path, *, title: str = "SFT") -> Path | None:
    """PNG of the train loss per update and the eval loss passes, read from ``metrics.jsonl``
    (so a resumed run draws its whole history); ``None`` when there is no train record."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train: dict[int, float] = {}
    evals: dict[int, float] = {}
    for rec in runs.read_metrics(metrics_path):  # a line cut by a kill is skipped
        if isinstance(rec.get("loss"), (int, float)) and isinstance(rec.get("step"), int):
            (train if rec.get("split") == "train" else evals)[rec["step"]] = float(rec["loss"])
    if not train:
        return None
    fig = Figure(figsize=(6.5, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = sorted(train)
    ax.plot(xs, [train[x] for x in xs], marker="." if len(xs) < 60 else None, label="train loss")
    if evals:
        ex = sorted(evals)
        ax.plot(ex, [evals[x] for x in ex], "o--", color="tab:red", label="held-out loss")
    ax.set_xlabel("update")
    ax.set_ylabel("masked next-token NLL")
    ax.set_title(f"{title}: SFT loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out_path)
    with io.atomic_output(out, "wb") as fh:
        fig.savefig(fh, dpi=100, format="png")
    return out


def _result_dict(result: SFTResult) -> dict[str, Any]:
    out = dataclasses.asdict(result)
    out.pop("samples")
    return out


# ----------------------------------------------------------------------------------------
# command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dsa_cast_train.sft``: resolve the config, train, print a summary."""
    parser = cli.stage_parser("sft", __doc__, example="--model.path DIR",
                              run_dir_help="run directory (resumed when it holds this stage)",
                              overwrite_help="delete a previous run in --run-dir first")
    invocation = cli.resolve(parser, argv)
    if invocation is None:
        return 0
    result = cli.execute(run, invocation)
    if result is None:
        return 2
    last = f"{result.train_losses[-1]:.4f}" if result.train_losses else "n/a"
    print(f"SFT steps {result.start_step} -> {result.final_step}, last loss {last}, "
          f"{result.tokens_per_second:.0f} tokens/s, {result.train_seconds:.1f} s training, "
          f"{result.total_seconds:.1f} s total; run dir {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
