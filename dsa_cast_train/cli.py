"""Command-line plumbing shared by the stage entry points (``sft``, ``evaluate``, ``grpo``, ``pipeline``).

Each stage's ``main`` builds its parser with :func:`stage_parser`, resolves the configuration with
:func:`resolve` (preset, files, ``--set`` and ``--section.field`` overrides; ``--print-config``) and
runs through :func:`execute`, so every stage reports a bad run directory, a missing model, file
or dataset the same way: one ``error: ...`` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dsa_cast_train import config as config_lib

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
    return parser


def resolve(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            overrides: Callable[[argparse.Namespace], Sequence[Override]] | None = None) -> Invocation | None:
    """Parse ``argv`` into a configuration; ``None`` when ``--print-config`` printed it (nothing to run).

    ``overrides`` maps stage-specific flags (e.g. ``--rubric``) to ``(field, value)`` pairs applied last.
    A configuration error exits through ``parser.error`` (status 2, naming the field).
    """
    args, extra = parser.parse_known_args(argv)
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
            config_lib.ConfigError, CheckpointError, NonFiniteError, io.InputError, io.OutputError)


def execute(run: Callable[..., Any], invocation: Invocation,
            extra_errors: tuple[type[BaseException], ...] = ()) -> Any | None:
    """``run(config, run_dir, overwrite=...)``; on a user error print ``error: ...`` and return ``None``."""
    args = invocation.args
    try:
        return run(invocation.config, args.run_dir, overwrite=args.overwrite)
    except user_errors() + extra_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
