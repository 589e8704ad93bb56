"""Command-line plumbing shared by the stage entry points (``sft``, ``evaluate``, ``grpo``, ``pipeline``).

Each stage's ``main`` builds its parser with :func:`stage_parser`, resolves the configuration with
:func:`resolve` (preset, files, ``--set`` and ``--section.field`` overrides; ``--print-config``) and
runs through :func:`execute`, so every stage reports a bad run directory, a missing model, file
or dataset the same way: one ``error: ...`` line and exit status 2, never a traceback.

Multi-host: :func:`resolve` starts ``jax.distributed`` (:mod:`dsa_cast_train.distributed`) from
``--coordinator/--num-processes/--process-id`` or the ``DSA_CAST_*`` environment before anything
else touches JAX or the run directory; :func:`execute` ends a run stopped by SIGTERM at its
checkpoint with status 143, and a process of a multi-process run that failed at once, so its peers
are not left waiting.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dsa_cast_train import config as config_lib
from dsa_cast_train import distributed

__all__ = ["Invocation", "execute", "resolve", "stage_parser", "user_errors"]

Override = tuple[str, object]


@dataclass(frozen=True)
class Invocation:
    """A parsed command line: the argparse namespace and the resolved configuration."""

    args: argparse.Namespace
    config: config_lib.PipelineConfig


def stage_parser(stage: str, doc: str | None, *, example: str, run_dir_help: str, overwrite_help: str,
                 default_preset: str | None = "tiny") -> argparse.ArgumentParser:
    """The parser every stage starts from: config arguments, ``--run-dir``, ``--overwrite``, ``--print-config``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m dsa_cast_train.{stage}", description=(doc or "").split("\n\n")[0],
        epilog=f"Any field can also be given as --section.field VALUE (e.g. {example}).")
    config_lib.add_config_arguments(parser, default_preset=default_preset)
    parser.add_argument("--run-dir", required=True, help=run_dir_help)
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    group = parser.add_argument_group(
        "multi-host", "start the same command on every host; see docs/multihost.md. A cluster JAX detects "
        f"(TPU pod slice, Slurm, Open MPI) needs only {distributed.ENABLE_ENV}=1")
    group.add_argument("--coordinator", metavar="HOST:PORT", default=None,
                       help=f"process 0's address and a free port (env {distributed.COORDINATOR_ENV})")
    group.add_argument("--num-processes", type=int, metavar="N", default=None,
                       help=f"processes in the run (env {distributed.NUM_PROCESSES_ENV})")
    group.add_argument("--process-id", type=int, metavar="I", default=None,
                       help=f"this process's id, 0 .. N-1 (env {distributed.PROCESS_ID_ENV})")
    return parser


def start_distributed(args: argparse.Namespace) -> bool:
    """Start ``jax.distributed`` as the flags (over the environment) ask; whether it runs.
    Raises :class:`distributed.DistributedError` naming what to set."""
    settings = distributed.settings_from_env(
        coordinator=getattr(args, "coordinator", None), num_processes=getattr(args, "num_processes", None),
        process_id=getattr(args, "process_id", None))
    return distributed.initialize(settings)


def resolve(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            overrides: Callable[[argparse.Namespace], Sequence[Override]] | None = None) -> Invocation | None:
    """Parse ``argv`` into a configuration; ``None`` when ``--print-config`` printed it (nothing to run).

    ``overrides`` maps stage-specific flags (e.g. ``--rubric``) to ``(field, value)`` pairs applied last.
    A configuration error exits through ``parser.error`` (status 2, naming the field). Unless only
    the config is printed, ``jax.distributed`` is started first (:func:`start_distributed`: before
    ``--preset auto`` asks JAX for the hardware); a failed start is ``error: ...`` and status 2.
    """
    args, extra = parser.parse_known_args(argv)
    if not args.print_config:
        try:
            start_distributed(args)
        except distributed.DistributedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    try:
        config = config_lib.config_from_args(args, extra)
        pairs = list(overrides(args)) if overrides is not None else []
        if pairs:
            config = config_lib.apply_overrides(config, pairs)
    except config_lib.ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        sys.stdout.write(config_lib.to_json(config))
        return None
    return Invocation(args, config)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input rather than a bug: reported as one line, exit status 2."""
    from dsa_cast import io

    from dsa_cast_train.data import DataFormatError, GSM8KUnavailable
    from dsa_cast_train.digests import CheckpointError
    from dsa_cast_train.guards import NonFiniteError
    from dsa_cast_train.models import ModelSourceError
    from dsa_cast_train.runs import RunDirError

    return (RunDirError, FileNotFoundError, ModelSourceError, GSM8KUnavailable, DataFormatError,
            config_lib.ConfigError, CheckpointError, NonFiniteError, io.InputError, io.OutputError,
            distributed.DistributedError)


def execute(run: Callable[..., Any], invocation: Invocation,
            extra_errors: tuple[type[BaseException], ...] = ()) -> Any | None:
    """``run(config, run_dir, overwrite=...)``; on a user error print ``error: ...`` and return ``None``.

    A run stopped by SIGTERM at its checkpoint (:class:`distributed.Preempted`) exits with status
    143. On a multi-process run a failing process exits at once (status 2 for a user error, 1 for
    anything else, after its traceback): JAX's normal shutdown would wait for its peers first.
    """
    args = invocation.args
    try:
        return run(invocation.config, args.run_dir, overwrite=args.overwrite)
    except distributed.Preempted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        distributed.exit_now(distributed.PREEMPTED_EXIT_STATUS)
    except user_errors() + extra_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        if distributed.process_count() > 1:
            distributed.exit_now(2)
        return None
    except Exception as exc:
        if distributed.process_count() == 1:
            raise
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: process {distributed.process_index()} of {distributed.process_count()} failed: "
              f"{type(exc).__name__}: {first} (when another process failed or was killed first, its "
              f"log has the cause)", file=sys.stderr)
        distributed.exit_now(1)
    return None  # not reached: exit_now does not return
