"""Stop a training run whose loss or gradient norm is not finite, keeping the last good checkpoint.

Step N's loss is computed with the parameters after update N-1 and its gradient makes update N.
A non-finite gradient norm at step N makes the parameters after update N garbage; a non-finite
loss means the parameters after update N-1 already are. :func:`check` raises
:class:`NonFiniteError` for the step, and :func:`discard_checkpoints_from` removes the checkpoints
this run wrote from the first garbage one on (``first_bad_checkpoint``: N, or N-1 for the loss),
so the newest checkpoint left is the last good one and a resume starts from it. Checkpoints from
before this run (the one it resumed from) are never removed. SFT calls :func:`check` from its
progress hooks; GRPO installs :func:`finite_hooks` on the actor trainer.

Tunix writes a step's metrics while the next step runs, so the error can surface one update
late: the update after the bad one is never checkpointed (the hooks run before its save), and a
checkpoint already written for a garbage step is discarded here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["NonFiniteError", "check", "discard_checkpoints_from", "finite_hooks"]


class NonFiniteError(RuntimeError):
    """A loss or gradient norm that is NaN or infinite; the message names the stage, step and value."""

    def __init__(self, stage: str, step: int, values: Mapping[str, float]):
        self.stage, self.step, self.values = stage, step, dict(values)
        self.kept: int | None = None  # the newest checkpoint left, once discard_checkpoints_from ran
        shown = ", ".join(f"{k} {v}" for k, v in values.items())
        self._text = (f"{stage} step {step}: {shown} is not finite; training stopped (lower the "
                      f"learning rate or check the data, then resume from the last good checkpoint)")
        super().__init__(self._text)

    @property
    def first_bad_checkpoint(self) -> int:
        """The first step whose parameters are garbage: N for a gradient norm, N-1 for the loss."""
        return self.step - 1 if "loss" in self.values else self.step

    def __str__(self) -> str:
        kept = "" if self.kept is None else (f"; the newest checkpoint is now step {self.kept}" if self.kept
                                              else "; no checkpoint was kept")
        return self._text + kept


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check(stage: str, step: int, **values: Any) -> None:
    """Raise :class:`NonFiniteError` when any given value (``loss=...``, ``grad_norm=...``; None
    means not measured) is NaN or infinite."""
    bad = {k: v for k, x in values.items() if (v := _number(x)) is not None and not math.isfinite(v)}
    if bad:
        raise NonFiniteError(stage, step, bad)


def discard_checkpoints_from(manager: Any, root: str | Path, error: NonFiniteError, start_step: int) -> list[int]:
    """Remove the checkpoints under ``root`` from ``error.first_bad_checkpoint`` on, among those this
    run wrote (steps after ``start_step``, where it started or resumed); returns their steps and
    records the newest step left in ``error.kept``.

    ``manager`` is the trainer's Tunix checkpoint manager (or None): its pending asynchronous saves
    are waited for first, then the steps are deleted through orbax and the manager closed, so no
    save lands afterwards. Only integer-named step directories are touched."""
    from dsa_cast_train import models

    first_bad_step = max(error.first_bad_checkpoint, start_step + 1)
    orbax = getattr(manager, "_checkpoint_manager", None)
    if orbax is not None:
        orbax.wait_until_finished()
    removed = []
    for step in models.checkpoint_steps(root):
        if step >= first_bad_step:
            if orbax is not None:
                orbax.delete(step)
            else:
                import shutil

                shutil.rmtree(Path(root) / str(step))
            removed.append(step)
    if manager is not None:
        manager.close()
    left = models.checkpoint_steps(root)
    error.kept = left[-1] if left else 0
    if removed:
        log.warning("removed checkpoint step(s) %s of %s: their parameters come from the non-finite step "
                    "(%s step %d)", removed, root, error.stage, error.step)
    return removed


def finite_hooks(stage: str):
    """Tunix ``TrainingHooks`` that check each update's loss and gradient norm (as logged by the
    trainer) and raise :class:`NonFiniteError` (for the actor trainer of GRPO, which has none)."""
    from tunix.sft import hooks

    class FiniteHooks(hooks.TrainingHooks):
        def on_train_start(self, train_ctx: Any) -> None:
            pass

        def on_train_end(self, train_ctx: Any) -> None:
            pass

        def on_train_step_start(self, train_ctx: Any) -> None:
            pass

        def on_train_step_end(self, train_ctx: Any, train_step: int, train_loss: float) -> None:
            check(stage, int(train_step), loss=train_loss, grad_norm=last_metric(train_ctx, "grad_norm"))

        def on_eval_step_start(self, train_ctx: Any) -> None:
            pass

        def on_eval_step_end(self, train_ctx: Any, eval_loss: float) -> None:
            pass

    return FiniteHooks()


def last_metric(trainer: Any, name: str, mode: str = "train") -> float | None:
    """The newest value of a metric the trainer logged (under its own prefix), or None."""
    logger, prefix = trainer.metrics_logger, getattr(trainer, "metrics_prefix", "")
    if not logger.metric_exists(prefix, name, mode):
        return None
    return float(logger.get_metric_history(prefix, name, mode)[-1])
