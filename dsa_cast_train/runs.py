"""Run directories: resolved config, marker, logs, metrics JSONL, resume and overwrite rules.

A run directory belongs to one stage (``sft``, ``evaluate``, ``grpo`` ...). Its layout::

    run.json           marker: stage, creation time, package version (what makes it "ours")
    .lock              held (flock) by the run using the directory; holds its pid
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
  directory carrying our marker;
- one run at a time: :func:`prepare` takes an exclusive lock on the directory (``.lock``,
  ``flock``) that the :class:`RunDir` holds until it is released (``with runs.prepare(...) as
  run:``) or its process ends; a second run on the directory is a :class:`RunDirError` naming
  the holder's pid.

Multi-host (:mod:`dsa_cast_train.distributed`): every process must name the same directory on a
file system they all share. Process 0 alone applies the rules above (and holds the lock) and
creates, resumes or resets; the other processes wait for its decision (or its error, which they
raise too), then all check that they see the same directory. Only process 0 writes
``metrics.jsonl`` and ``run.log``; process ``i`` logs to its own ``run.process-<i>.log``.

Every JSON file here is written atomically (:mod:`dsa_cast.io`) and read with located errors.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsa_cast import io
from dsa_cast_train import config as config_lib

try:  # POSIX; elsewhere runs are not locked (a warning says so)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MARKER = "run.json"
CONFIG_FILE = "config.json"
LOG_FILE = "run.log"
METRICS_FILE = "metrics.jsonl"
LOCK_FILE = ".lock"

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to pass."""


class RunLock:
    """An exclusive ``flock`` on ``<directory>/.lock``, held from construction to :meth:`release`
    (or the end of the process: the kernel drops it, so a killed run leaves no stale lock). The
    file keeps the holder's pid, stage and start time for the message a second run gets."""

    def __init__(self, directory: Path, stage: str):
        self.path = directory / LOCK_FILE
        self._fh: Any = None
        if fcntl is None:  # pragma: no cover - Windows
            log.warning("run dir %s is not locked: file locks need a POSIX system", directory)
            return
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115  (kept open while held)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read(4096).strip()
            fh.close()
            try:
                info = json.loads(holder)
                who = (f"pid {info['pid']} on {info.get('host', '?')}, {info.get('stage', '?')} "
                       f"started {info.get('started', '?')}")
            except (ValueError, TypeError, KeyError):
                who = "a process whose pid is not recorded yet"
            raise RunDirError(f"run dir {directory} is in use by another run ({who}); wait for it to "
                              f"finish or choose another --run-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                             "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}) + "\n")
        fh.flush()
        self._fh = fh

    @property
    def held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        """Drop the lock (the file stays: it is how the directory is locked next time)."""
        if self._fh is not None:
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


@dataclass(frozen=True)
class RunDir:
    """A prepared run directory; it holds the directory's lock until :meth:`release` (also on
    leaving a ``with`` block)."""

    path: Path
    stage: str
    resumed: bool
    """True when this start continues an earlier one in the same directory."""
    lock: RunLock | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

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
    """Write strict JSON atomically (:func:`dsa_cast.io.atomic_write_json`: temporary file, fsync,
    rename), so a crash never leaves half a file; a non-finite float is written as ``null``."""
    io.atomic_write_json(path, _finite(data), default=_json_default)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], *, ensure_ascii: bool = True) -> Path:
    """Write one JSON object per line atomically (:func:`dsa_cast.io.atomic_output`): a failure
    part way (a row that cannot be encoded, a full disk, a kill) leaves the previous file as it
    was and no temporary file behind."""
    with io.atomic_output(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=ensure_ascii) + "\n")
    return Path(path)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) as None: strict JSON readers reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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
        return io.load_json(path / MARKER)
    except io.InputError:
        return None


def _entries(path: Path) -> list[Path]:
    """What a run directory holds, its lock file aside."""
    return [p for p in path.iterdir() if p.name != LOCK_FILE]


def _clear(path: Path) -> None:
    for child in _entries(path):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _start_fresh(path: Path, stage: str, config: config_lib.PipelineConfig, lock: RunLock) -> RunDir:
    from dsa_cast import __version__

    write_json(path / MARKER, {"stage": stage, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                               "dsa_cast_version": __version__})
    write_json(path / CONFIG_FILE, config_lib.to_dict(config))
    return RunDir(path, stage, resumed=False, lock=lock)


def _not_ours(path: Path, overwrite: bool) -> RunDirError | None:
    """The refusal for a non-empty directory without our marker (nothing is written to it)."""
    if _entries(path) and _read_marker(path) is None:
        listing = ", ".join(sorted(p.name for p in _entries(path))[:8])
        what = "refusing to delete it: " if overwrite else ""
        return RunDirError(
            f"run dir {path} is not empty (files not made by dsa_cast_train: {listing}) and has no "
            f"{MARKER}; {what}it was not created by dsa_cast_train; choose an empty or new --run-dir")
    return None


def saved_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory as today's :func:`config.to_dict` writes it (fields
    added since are filled with their defaults, fields no longer written are dropped), so that a
    comparison with a new config shows real changes only; as written when it no longer parses."""
    old = io.load_json(Path(path) / CONFIG_FILE)  # io.InputError (a ValueError) names the problem
    try:
        return config_lib.to_dict(config_lib.from_dict(old))
    except config_lib.ConfigError:
        return old


def prepare(path: str | Path, stage: str, config: config_lib.PipelineConfig, *, overwrite: bool = False,
            resumable: bool = True, must_match: Sequence[str] = ("model", "data")) -> RunDir:
    """Lock, then create, resume or (with ``overwrite``) reset the run directory for ``stage``.

    ``must_match`` lists config sections or dotted fields that may not change on resume
    (different weights or data would make the checkpoint meaningless). The returned
    :class:`RunDir` holds the directory's lock: release it when the run ends (``with``). On a
    multi-process run process 0 decides for all (see the module docstring).
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
    if path.exists() and (refusal := _not_ours(path, overwrite)) is not None:
        raise refusal  # checked before the lock file would be added to someone else's directory
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path, stage)
    try:
        return _prepare_locked(path, stage, config, lock, overwrite, resumable, must_match)
    except BaseException:
        lock.release()
        raise


def _prepare_locked(path: Path, stage: str, config: config_lib.PipelineConfig, lock: RunLock,
                    overwrite: bool, resumable: bool, must_match: Sequence[str]) -> RunDir:
    if not _entries(path):
        return _start_fresh(path, stage, config, lock)
    if (refusal := _not_ours(path, overwrite)) is not None:
        raise refusal
    marker = _read_marker(path) or {}
    if overwrite:
        _clear(path)
        return _start_fresh(path, stage, config, lock)
    if marker.get("stage") != stage or not resumable:
        what = "a run of another stage"
        if marker.get("stage") == stage:
            what = f"an earlier {stage} run"
        listing = ", ".join(sorted(p.name for p in _entries(path))[:8])
        raise RunDirError(
            f"run dir {path} is not empty ({what}: {listing}); pass --overwrite to start afresh "
            f"(deletes it) or choose another --run-dir")
    try:
        old = saved_config(path)
    except (OSError, ValueError) as exc:  # io.InputError is a ValueError
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
        io.atomic_write_bytes(path / f"config.prev-{n}.json", (path / CONFIG_FILE).read_bytes())
        write_json(path / CONFIG_FILE, new)
        log.info("resumed with changed fields (previous config kept as config.prev-%d.json): %s", n,
                 ", ".join(f"{name}={b!r}" for name, _, b in changed))
    return RunDir(path, stage, resumed=True, lock=lock)


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
    """Appends one JSON object per line to ``metrics.jsonl`` (flushed per line, crash-safe; a
    non-finite float is written as ``null``, so the file stays strict JSON).

    ``path=None`` writes nothing: what the processes other than process 0 of a multi-process run
    use (:func:`metrics_writer`), so each record appears once."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._fh = self.path.open("a", encoding="utf-8") if self.path is not None else None

    def write(self, record: Mapping[str, Any]) -> None:
        if self._fh is None:
            return
        line = {"time": round(time.time(), 3), **record}
        self._fh.write(json.dumps(_finite(line), default=_json_default) + "\n")
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
    """All records of a ``metrics.jsonl`` (none when it does not exist); a bad line, such as the
    torn last line of a killed writer, is skipped."""
    if not Path(path).is_file():
        return []
    return [rec for _, rec in io.read_jsonl(path, skip_bad=True).records]


def truncate_records(path: str | Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a JSONL file of records atomically, keeping those ``keep`` accepts (and dropping bad
    lines, such as a torn last line); returns how many were dropped. On resume, the records
    logged after the restored checkpoint belong to steps that will be redone: dropping them first
    makes each (kind, step) appear exactly once."""
    p = Path(path)
    if not p.is_file():
        return 0
    read = io.read_jsonl(p, skip_bad=True)
    kept = [rec for _, rec in read.records if keep(rec)]
    dropped = len(read.records) - len(kept) + len(read.bad_lines)
    if dropped:
        io.atomic_write_text(p, "".join(json.dumps(rec) + "\n" for rec in kept))
    return dropped


def step_of(record: Mapping[str, Any]) -> int:
    """A record's ``step`` as an int (0 when missing or not a number)."""
    step = record.get("step", 0)
    return step if isinstance(step, int) and not isinstance(step, bool) else 0
