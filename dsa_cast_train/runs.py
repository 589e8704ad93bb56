"""Run directories: resolved config, marker, logs, metrics JSONL, resume and overwrite rules.

A run directory belongs to one stage (``sft``, ``evaluate``, ``grpo`` ...). Its layout::

    run.json           marker: stage, creation time, package version (what makes it "ours")
    config.json        the resolved configuration of the latest start
    config.prev-N.json earlier configurations when a resumed run changed allowed fields
    run.log            log lines of every start (appended)
    metrics.jsonl      one JSON object per logged step (appended)
    checkpoints/       orbax checkpoints (trainer stages)
    tensorboard/       TensorBoard event files

Rules (so that nothing is overwritten by accident):

- a missing or empty directory starts fresh;
- a directory of the same stage resumes (``resumable`` stages) when the fields in
  ``must_match`` are unchanged; otherwise it is an error naming the changed fields;
- anything else that is non-empty needs ``overwrite=True``, which only ever deletes a
  directory carrying our marker.

Multi-host (:mod:`dsa_cast_train.distributed`): every process must name the same directory on a
file system they all share. Process 0 alone applies the rules above and creates, resumes or
resets; the other processes wait for its decision (or its error, which they raise too), then all
check that they see the same directory. Only process 0 writes ``metrics.jsonl`` and
``run.log``; process ``i`` logs to its own ``run.process-<i>.log``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsa_cast_train import config as config_lib

MARKER = "run.json"
CONFIG_FILE = "config.json"
LOG_FILE = "run.log"
METRICS_FILE = "metrics.jsonl"

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to pass."""


@dataclass(frozen=True)
class RunDir:
    """A prepared run directory."""

    path: Path
    stage: str
    resumed: bool
    """True when this start continues an earlier one in the same directory."""

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / jax scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted fields whose values differ between two nested config dicts."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(config_diff(a, b, f"{name}."))
        elif a != b:
            out.append((name, a, b))
    return out


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _clear(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _start_fresh(path: Path, stage: str, config: config_lib.PipelineConfig) -> RunDir:
    path.mkdir(parents=True, exist_ok=True)
    from dsa_cast import __version__

    write_json(path / MARKER, {"stage": stage, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                               "dsa_cast_version": __version__})
    write_json(path / CONFIG_FILE, config_lib.to_dict(config))
    return RunDir(path, stage, resumed=False)


def saved_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory as today's :func:`config.to_dict` writes it (fields
    added since are filled with their defaults, fields no longer written are dropped), so that a
    comparison with a new config shows real changes only; as written when it no longer parses."""
    old = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    if not isinstance(old, dict):
        raise ValueError(f"{CONFIG_FILE} is not a JSON object")
    try:
        return config_lib.to_dict(config_lib.from_dict(old))
    except config_lib.ConfigError:
        return old


def prepare(path: str | Path, stage: str, config: config_lib.PipelineConfig, *, overwrite: bool = False,
            resumable: bool = True, must_match: Sequence[str] = ("model", "data")) -> RunDir:
    """Create, resume or (with ``overwrite``) reset the run directory for ``stage``.

    ``must_match`` lists config sections or dotted fields that may not change on resume
    (different weights or data would make the checkpoint meaningless). On a multi-process run
    process 0 decides for all (see the module docstring); every process gets the same answer.
    """
    from dsa_cast_train import distributed

    def here() -> RunDir:
        return _prepare_here(path, stage, config, overwrite=overwrite, resumable=resumable,
                             must_match=must_match)

    if distributed.process_count() == 1:
        return here()
    return _prepare_shared(Path(path).expanduser().resolve(), stage, here)


def _prepare_shared(path: Path, stage: str, here: Callable[[], RunDir]) -> RunDir:
    """:func:`prepare` on a multi-process run: same directory everywhere, process 0 decides,
    then the shared-file-system check."""
    import socket

    from dsa_cast_train import distributed

    seen = [json.loads(t) for t in distributed.all_gather_text(f"run dir {stage}",
                                                               json.dumps([str(path), socket.gethostname()]))]
    if any(p != seen[0][0] for p, _ in seen):
        listing = "; ".join(f"process {i} on {host}: {p}" for i, (p, host) in enumerate(seen))
        raise RunDirError(f"every process must use the same --run-dir, on a file system all hosts share "
                          f"({listing})")
    run = distributed.decide(f"prepare {stage} {path}", here, encode=lambda r: r.resumed,
                             decode=lambda resumed: RunDir(path, stage, resumed=bool(resumed)),
                             errors=(RunDirError, OSError))
    try:
        distributed.check_shared_directory(path)
    except distributed.DistributedError as exc:
        raise RunDirError(str(exc)) from None
    return run


def _prepare_here(path: str | Path, stage: str, config: config_lib.PipelineConfig, *, overwrite: bool,
                  resumable: bool, must_match: Sequence[str]) -> RunDir:
    """:func:`prepare`'s rules, applied by this process alone."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run dir {path} exists and is not a directory")
    if not path.exists() or not any(path.iterdir()):
        return _start_fresh(path, stage, config)
    marker = _read_marker(path)
    if overwrite:
        if marker is None:
            raise RunDirError(
                f"refusing to delete {path}: it is not empty and has no {MARKER}, so it was not "
                f"created by dsa_cast_train; choose an empty or new --run-dir")
        _clear(path)
        return _start_fresh(path, stage, config)
    if marker is None or marker.get("stage") != stage or not resumable:
        what = "a run of another stage" if marker else "files not made by dsa_cast_train"
        if marker and marker.get("stage") == stage:
            what = f"an earlier {stage} run"
        listing = ", ".join(sorted(p.name for p in path.iterdir())[:8])
        raise RunDirError(
            f"run dir {path} is not empty ({what}: {listing}); pass --overwrite to start afresh "
            f"(deletes it) or choose another --run-dir")
    try:
        old = saved_config(path)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"cannot resume {path}: unreadable {CONFIG_FILE} ({exc}); pass --overwrite") from exc
    new = config_lib.to_dict(config)
    changed = config_diff(old, new)
    blocking = [c for c in changed if any(c[0] == m or c[0].startswith(m + ".") for m in must_match)]
    if blocking:
        fields = "; ".join(f"{name}: {a!r} -> {b!r}" for name, a, b in blocking)
        raise RunDirError(
            f"cannot resume {path}: these fields differ from its {CONFIG_FILE}: {fields}. "
            f"Use the same settings, another --run-dir, or --overwrite")
    if changed:
        n = 1
        while (path / f"config.prev-{n}.json").exists():
            n += 1
        shutil.copyfile(path / CONFIG_FILE, path / f"config.prev-{n}.json")
        write_json(path / CONFIG_FILE, new)
        log.info("resumed with changed fields (previous config kept as config.prev-%d.json): %s", n,
                 ", ".join(f"{name}={b!r}" for name, _, b in changed))
    return RunDir(path, stage, resumed=True)


class _DropMisleading(logging.Filter):
    """Drops Tunix's "Skipping non-TPU device: cpu. You might be missing jax[tpu] dependency."
    warning, which it logs for every CPU device (only ever for a CPU): nothing is missing there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Skipping non-TPU device"))


@contextlib.contextmanager
def logging_to(run: RunDir, level: int = logging.INFO) -> Iterator[None]:
    """Send log records (ours, Tunix's and absl's) to ``run.log`` and stderr while inside.

    Process ``i`` > 0 of a multi-process run logs to ``run.process-<i>.log`` instead, and only
    warnings and errors (tagged ``[process i]``) to stderr. Handlers (and the filter on absl's
    misleading CPU warning) are removed again on exit, so nothing global outlives the stage.
    """
    from dsa_cast_train import distributed

    root = logging.getLogger()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    file_handler = logging.FileHandler(run.path / distributed.per_process_name(LOG_FILE), encoding="utf-8")
    file_handler.setFormatter(fmt)
    file_handler.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    primary = distributed.is_primary()
    tag = "" if primary else f"[process {distributed.process_index()}] "
    console.setFormatter(logging.Formatter(f"{tag}%(levelname)s %(name)s: %(message)s"))
    console.setLevel(level if primary else max(level, logging.WARNING))
    package = logging.getLogger("dsa_cast_train")
    old_pkg = package.level
    root.addHandler(file_handler)
    if not any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
               for h in root.handlers):
        root.addHandler(console)
    else:
        console = None
    package.setLevel(level)
    absl = logging.getLogger("absl")
    quiet = _DropMisleading()
    absl.addFilter(quiet)
    try:
        yield
    finally:
        absl.removeFilter(quiet)
        root.removeHandler(file_handler)
        file_handler.close()
        if console is not None:
            root.removeHandler(console)
        package.setLevel(old_pkg)


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed per line, crash-safe).

    ``path=None`` writes nothing: what the processes other than process 0 of a multi-process run
    use (:func:`metrics_writer`), so each record appears once."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._fh = self.path.open("a", encoding="utf-8") if self.path is not None else None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            return
        line = {"time": round(time.time(), 3), **record}
        self._fh.write(json.dumps(line, default=_json_default) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def metrics_writer(run: RunDir) -> MetricsWriter:
    """The run's ``metrics.jsonl`` writer on process 0; one that writes nothing elsewhere."""
    from dsa_cast_train import distributed

    return MetricsWriter(run.metrics if distributed.is_primary() else None)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
