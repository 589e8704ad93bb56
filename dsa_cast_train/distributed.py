"""Several JAX processes running one job ("multi-host"): start-up, roles, agreement, shutdown.

Every host runs the same command; :func:`initialize` connects them through
``jax.distributed`` before anything touches a run directory. Where the processes come from:

- a cluster JAX detects (Cloud TPU pod slice, Slurm, Open MPI, Kubernetes): set
  ``DSA_CAST_DISTRIBUTED=1`` on every host and JAX fills in the rest;
- anything else (GPU nodes without a scheduler, several processes on one machine): give the
  coordinator address (``host:port`` of process 0), the process count and this process's id,
  as ``--coordinator/--num-processes/--process-id`` or ``DSA_CAST_COORDINATOR``,
  ``DSA_CAST_NUM_PROCESSES`` and ``DSA_CAST_PROCESS_ID`` (``JAX_COORDINATOR_ADDRESS``, which JAX
  reads itself, also asks for it).

Roles: process 0 is the *primary*; it alone decides whether a run directory starts fresh or
resumes and writes the files people read (metrics, results, reports, plots, ``run.log``).
:func:`decide`, :func:`all_gather_text` and :func:`barrier` pass that decision (or process
0's error) to the other processes through the key-value store of the JAX coordination
service, with timeouts, so a failure is an error on every process instead of a hang.
:func:`check_shared_directory` proves early that a directory is one file system for all of
them (orbax writes one checkpoint from every process into it). On CPU the processes talk
through gloo collectives.

Shutdown: under ``jax.distributed`` JAX catches SIGTERM (its preemption notifier) and the
process does not end. :func:`watch_preemption` makes a trainer stop right after the
checkpoint that orbax writes at JAX's preemption sync point (the same step on every process),
raising :class:`Preempted`. A process that loses a peer gets an error from the next
collective, or is ended by the coordination service once the peer missed heartbeats for
``DSA_CAST_HEARTBEAT_SECONDS``; :func:`exit_now` ends a failed process at once (JAX's own
shutdown would wait for the lost peer first).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

ENABLE_ENV = "DSA_CAST_DISTRIBUTED"
COORDINATOR_ENV = "DSA_CAST_COORDINATOR"
NUM_PROCESSES_ENV = "DSA_CAST_NUM_PROCESSES"
PROCESS_ID_ENV = "DSA_CAST_PROCESS_ID"
HEARTBEAT_ENV = "DSA_CAST_HEARTBEAT_SECONDS"
INIT_TIMEOUT_ENV = "DSA_CAST_INIT_TIMEOUT_SECONDS"
JAX_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
"""Read by ``jax.distributed.initialize`` itself; setting it also asks for a distributed start."""
CPU_COLLECTIVES_ENV = "JAX_CPU_COLLECTIVES_IMPLEMENTATION"

PREEMPTED_EXIT_STATUS = 143
"""Exit status of a run stopped by SIGTERM after its checkpoint (128 + SIGTERM, as a shell reports)."""
DECISION_TIMEOUT_S = 1800
"""How long the other processes wait for process 0's decision (it may delete an old run first)."""
BARRIER_TIMEOUT_S = 600

HELP = (f"for a cluster JAX detects (TPU pod slice, Slurm, Open MPI, Kubernetes) set {ENABLE_ENV}=1; "
        f"otherwise give every process --coordinator HOST:PORT (process 0's address and a free port), "
        f"--num-processes N and --process-id I (0 .. N-1), or {COORDINATOR_ENV}, {NUM_PROCESSES_ENV} and "
        f"{PROCESS_ID_ENV}")

T = TypeVar("T")


class DistributedError(RuntimeError):
    """A multi-process start or agreement failed; the message says what to set or check."""


class Preempted(RuntimeError):
    """Training stopped at JAX's preemption sync point (SIGTERM) after checkpointing ``step``."""

    def __init__(self, step: int, checkpoint_dir: str | Path | None = None):
        self.step = step
        self.checkpoint_dir = str(checkpoint_dir) if checkpoint_dir is not None else None
        where = f" in {checkpoint_dir}" if checkpoint_dir is not None else ""
        super().__init__(f"stopped by SIGTERM (preemption) after saving the checkpoint of step {step}{where}; "
                         f"run the same command again to resume")


# ----------------------------------------------------------------------------------------
# settings and start-up


@dataclass(frozen=True)
class Settings:
    """How to start ``jax.distributed`` (``None`` fields: JAX's cluster auto-detection fills them)."""

    enabled: bool | None = None
    """True: start it; False: never; None: start it when any address/count/id is given."""
    coordinator: str | None = None
    """``host:port`` of process 0's coordination service."""
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_seconds: int = 100
    """A process silent this long is declared dead and every other process is ended."""
    init_timeout_seconds: int = 300
    """How long a process waits for all the others to connect."""

    @property
    def requested(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return any(v is not None for v in (self.coordinator, self.num_processes, self.process_id))

    def __post_init__(self) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            raise DistributedError(f"the process count must be at least 1, got {self.num_processes}")
        if self.process_id is not None and self.process_id < 0:
            raise DistributedError(f"the process id must be at least 0, got {self.process_id}")
        if (self.num_processes is not None and self.process_id is not None
                and self.process_id >= self.num_processes):
            raise DistributedError(f"the process id ({self.process_id}) must be below the process count "
                                   f"({self.num_processes}): ids run 0 .. {self.num_processes - 1}")
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DistributedError(f"the coordinator address must be HOST:PORT, got {self.coordinator!r}")
        for name in ("heartbeat_seconds", "init_timeout_seconds"):
            if getattr(self, name) < 1:
                raise DistributedError(f"{name} must be at least 1, got {getattr(self, name)}")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"{name}: expected an integer, got {raw!r}") from None


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """:class:`Settings` from the environment (``DSA_CAST_*``, ``JAX_COORDINATOR_ADDRESS``), with
    ``overrides`` (e.g. the command-line flags; ``None`` values are ignored) applied on top."""
    env = os.environ if env is None else env
    flag = env.get(ENABLE_ENV, "").strip().lower()
    if flag in ("", "auto"):
        enabled = True if env.get(JAX_COORDINATOR_ENV) else None
    elif flag in ("1", "true", "yes"):
        enabled = True
    elif flag in ("0", "false", "no"):
        enabled = False
    else:
        raise DistributedError(f"{ENABLE_ENV}: expected 1 or 0, got {env.get(ENABLE_ENV)!r}")
    values: dict[str, Any] = {
        "enabled": enabled,
        "coordinator": env.get(COORDINATOR_ENV, "").strip() or None,
        "num_processes": _env_int(env, NUM_PROCESSES_ENV),
        "process_id": _env_int(env, PROCESS_ID_ENV),
    }
    for name, key in ((HEARTBEAT_ENV, "heartbeat_seconds"), (INIT_TIMEOUT_ENV, "init_timeout_seconds")):
        if (value := _env_int(env, name)) is not None:
            values[key] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    if enabled is False and any(overrides.get(k) is not None for k in ("coordinator", "num_processes", "process_id")):
        values["enabled"] = None  # explicit flags win over DSA_CAST_DISTRIBUTED=0
    return Settings(**values)


def initialize(settings: Settings | None = None) -> bool:
    """Start ``jax.distributed`` once, as ``settings`` (default: :func:`settings_from_env`) ask;
    returns whether this is a multi-process run. Must run before any other JAX call.

    Raises :class:`DistributedError` naming what to set when JAX cannot find the coordinator,
    process count or id, or cannot connect within the timeout. Without a request it does not
    even import JAX (:func:`check_single_controller` catches a multi-process run started so).
    """
    jax_module = sys.modules.get("jax")
    if jax_module is not None and jax_module.distributed.is_initialized():
        return True
    settings = settings_from_env() if settings is None else settings
    if not settings.requested:
        return False
    import jax

    if settings.coordinator and settings.process_id not in (None, 0):
        # JAX aborts the process (no exception) when it cannot register with the coordinator
        _wait_for_coordinator(settings.coordinator, settings.init_timeout_seconds, settings.process_id)
    if not os.environ.get(CPU_COLLECTIVES_ENV):
        # CPU devices of different processes can only exchange data through gloo (or MPI)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator, num_processes=settings.num_processes,
            process_id=settings.process_id, initialization_timeout=settings.init_timeout_seconds,
            heartbeat_timeout_seconds=settings.heartbeat_seconds)
    except (ValueError, TypeError) as exc:  # missing address/count/id, bad values
        raise DistributedError(f"cannot start jax.distributed: {exc} ({HELP})") from None
    except RuntimeError as exc:  # backend already started, coordinator unreachable (timeout)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"cannot start jax.distributed (coordinator {settings.coordinator or 'auto-detected'}, "
            f"process {settings.process_id if settings.process_id is not None else '?'} of "
            f"{settings.num_processes or '?'}): {first}. Check that every process was started with the "
            f"same coordinator address and process count, that process 0 runs, and that the port is "
            f"reachable") from None
    log.info("jax.distributed: process %d of %d on %s, %d local / %d global devices", jax.process_index(),
             jax.process_count(), socket.gethostname(), jax.local_device_count(), jax.device_count())
    return True


def _wait_for_coordinator(address: str, timeout_s: float, process_id: int) -> None:
    """Wait until process 0's coordination service accepts TCP connections at ``address``, at
    most ``timeout_s``; a :class:`DistributedError` saying what to check otherwise."""
    import time

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"cannot start jax.distributed: process {process_id} found no coordinator at {address} "
                    f"within {timeout_s:g} s ({exc.strerror or exc}). Check that process 0 runs with the same "
                    f"--coordinator and that the port is reachable from this host") from None
            time.sleep(0.5)


def check_single_controller() -> None:
    """Refuse a run that JAX sees as several processes although ``jax.distributed`` was not started
    here (e.g. a TPU pod slice without ``DSA_CAST_DISTRIBUTED=1``): each process would act as the
    primary. Queries the devices, so call it where the backend starts anyway (the mesh)."""
    import jax

    if not jax.distributed.is_initialized() and jax.process_count() > 1:
        raise DistributedError(f"JAX sees {jax.process_count()} processes, but jax.distributed was not "
                               f"started: {HELP}")


def process_count() -> int:
    """JAX processes in this run (1 unless :func:`initialize` started ``jax.distributed``)."""
    import jax

    return jax.process_count() if jax.distributed.is_initialized() else 1


def process_index() -> int:
    """This process's id (0 unless :func:`initialize` started ``jax.distributed``)."""
    import jax

    return jax.process_index() if jax.distributed.is_initialized() else 0


def is_primary() -> bool:
    """True on process 0, the one that writes what people read."""
    return process_index() == 0


def per_process_name(name: str) -> str:
    """``name`` on process 0, ``<stem>.process-<i><suffix>`` on process ``i`` (its own log file)."""
    index = process_index()
    if index == 0:
        return name
    path = Path(name)
    return f"{path.stem}.process-{index}{path.suffix}"


# ----------------------------------------------------------------------------------------
# agreement through the coordination service's key-value store


@functools.cache
def _sequence() -> itertools.count:
    """Numbers every agreement call; all processes make the same calls in the same order, so the
    n-th call uses the same keys everywhere and no key is reused."""
    return itertools.count()


def _client() -> Any:
    from jax._src import distributed as jax_distributed  # the client orbax uses too; no public accessor

    client = jax_distributed.global_state.client
    if client is None:
        raise DistributedError("jax.distributed is not started")
    return client


def _key(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return f"dsa_cast/{next(_sequence())}/{safe}"


def _lost(what: str, exc: Exception) -> DistributedError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DistributedError(f"process {process_index()}: {what} failed: {first} (another process probably "
                            f"failed or is stuck; see its log)")


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Wait until every process reaches the barrier ``name`` (at most ``timeout_s``).

    Also what to call right before a run's first multi-process computation: on CPU, gloo
    connects the processes at that moment and waits only 30 s for the slowest one (``Gloo context
    initialization failed: DEADLINE_EXCEEDED``), and loading and compiling before it can take
    longer than that on one process of a busy machine."""
    if process_count() == 1:
        return
    key = _key(name)
    try:
        _client().wait_at_barrier(key, int(timeout_s * 1000))
    except Exception as exc:  # jaxlib raises its own error types for timeouts and dead peers
        raise _lost(f"barrier {name!r}", exc) from exc


def all_gather_text(name: str, text: str, timeout_s: float = BARRIER_TIMEOUT_S) -> list[str]:
    """Every process's ``text``, indexed by process id."""
    count = process_count()
    if count == 1:
        return [text]
    key = _key(name)
    client = _client()
    try:
        client.key_value_set(f"{key}/{process_index()}", text)
        client.wait_at_barrier(f"{key}/barrier", int(timeout_s * 1000))
        got = dict(client.key_value_dir_get(f"{key}/"))
    except Exception as exc:
        raise _lost(f"exchange {name!r}", exc) from exc
    return [got[f"{key}/{i}"] for i in range(count)]


def decide(name: str, decide_fn: Callable[[], T], *, encode: Callable[[T], Any], decode: Callable[[Any], T],
           errors: Sequence[type[Exception]] = (), timeout_s: float = DECISION_TIMEOUT_S) -> T:
    """Process 0 runs ``decide_fn``; the others get ``decode(encode(result))``, or raise the same
    error when it raised one of ``errors`` (a :class:`DistributedError` for anything else), so
    every process acts on one decision. Single process: just ``decide_fn()``."""
    if process_count() == 1:
        return decide_fn()
    key = _key(name)
    client = _client()
    if is_primary():
        try:
            value = decide_fn()
        except Exception as exc:
            kind = next((i for i, e in enumerate(errors) if isinstance(exc, e)), -1)
            _publish(client, key, {"error": kind, "message": str(exc), "type": type(exc).__name__})
            raise
        _publish(client, key, {"ok": encode(value)})
        return value
    try:
        message = json.loads(client.blocking_key_value_get(key, int(timeout_s * 1000)))
    except Exception as exc:
        raise _lost(f"waiting for process 0's decision {name!r}", exc) from exc
    if "ok" in message:
        return decode(message["ok"])
    if 0 <= message["error"] < len(errors):
        raise errors[message["error"]](message["message"])
    raise DistributedError(f"process 0 failed ({message['type']}): {message['message']}")


def _publish(client: Any, key: str, message: Mapping[str, Any]) -> None:
    try:
        client.key_value_set(key, json.dumps(message))
    except Exception as exc:
        raise _lost("publishing a decision", exc) from exc


def check_shared_directory(path: str | Path, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
    """Prove that ``path`` (created by process 0) is the same directory for every process.

    Process 0 writes a file with a random token; every other process must read that token
    there. Orbax writes each checkpoint from all processes into one directory and waits for
    all of them, so a directory that is local to each host would hang the first save; this
    fails at the start instead, on every process, naming the hosts that cannot see it."""
    if process_count() == 1:
        return
    path = Path(path)
    token = secrets.token_hex(8)
    probe = path / f".shared-check-{token}"
    error = ""
    if is_primary():
        try:
            probe.write_text(token, encoding="utf-8")
        except OSError as exc:
            error = f"cannot write {probe}: {exc}"
    token = decide(f"shared {path}", lambda: token, encode=str, decode=str)
    probe = path / f".shared-check-{token}"
    if not is_primary():
        try:
            if probe.read_text(encoding="utf-8") != token:
                error = f"{probe} holds another token"
        except OSError as exc:
            error = f"cannot read {probe} written by process 0 ({type(exc).__name__})"
    host = socket.gethostname()
    reports = all_gather_text(f"shared-report {path}", json.dumps([host, error]), timeout_s)
    if is_primary():
        probe.unlink(missing_ok=True)
    failed = [(i, *json.loads(r)) for i, r in enumerate(reports) if json.loads(r)[1]]
    if failed:
        who = "; ".join(f"process {i} on {h}: {e}" for i, h, e in failed)
        raise DistributedError(
            f"run dir {path} is not one file system shared by all {process_count()} processes ({who}). "
            f"Checkpoints are written by every process into the same directory: put --run-dir on a file "
            f"system every host mounts at the same path (NFS, Lustre, GCS FUSE, Filestore)")


# ----------------------------------------------------------------------------------------
# data-parallel batches


@dataclass(frozen=True)
class BatchLayout:
    """Which rows of a global batch, sharded on the mesh's ``fsdp`` axis, this process's devices
    hold. Every process builds the same global batch (same data, same order as a single-process
    run) and hands JAX only these rows (:func:`global_batch`)."""

    batch_size: int
    rows: tuple[int, ...]
    """This process's rows, in global order (several processes share rows when ``tp`` spans hosts)."""


def batch_layout(mesh: Any, batch_size: int, what: str = "batch size") -> BatchLayout:
    """The :class:`BatchLayout` of ``batch_size`` rows split over ``mesh``'s ``fsdp`` axis.

    Tunix's own input sharding decides from each process's *local* rows and silently
    replicates them when they do not divide the axis, which gives every process a different
    "replicated" batch and wrong losses; trainers feed :func:`global_batch` arrays instead. A
    ``batch_size`` that does not divide over the axis is a :class:`ConfigError`."""
    from jax.sharding import NamedSharding, PartitionSpec

    from dsa_cast_train.config import ConfigError

    fsdp = int(mesh.shape["fsdp"])
    if batch_size % fsdp:
        raise ConfigError(f"{what} ({batch_size}) must be a multiple of mesh.fsdp ({fsdp}) on a multi-process "
                          f"run: each of the {fsdp} data-parallel shards holds the same number of rows")
    index_map = NamedSharding(mesh, PartitionSpec("fsdp")).addressable_devices_indices_map((batch_size,))
    rows = sorted({r for index in index_map.values() for r in range(*index[0].indices(batch_size))})
    return BatchLayout(batch_size, tuple(rows))


def global_batch(batch: Mapping[str, Any], mesh: Any, layout: BatchLayout) -> dict[str, Any]:
    """A global batch (numpy, ``layout.batch_size`` rows, the same on every process) as global JAX
    arrays sharded on ``fsdp``, built from this process's rows only; unchanged on one process."""
    if process_count() == 1:
        return dict(batch)
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec("fsdp"))
    rows = np.asarray(layout.rows)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)[rows], np.shape(v))
            for k, v in batch.items()}


def async_checkpointing() -> bool:
    """Whether orbax may save checkpoints in background threads: only on a single process. Its
    background finalisation waits at barriers made of JAX collectives, which then run in another
    order than the training step's on some process (gloo: "Received data size doesn't match
    expected size ... collective mismatch", seen with two GRPO processes)."""
    return process_count() == 1


class InlineExecutor(futures.Executor):
    """A ``concurrent.futures`` executor that runs each task at once in the calling thread.

    Multi-controller JAX needs every process to start its multi-device computations in the same
    order. Tunix 0.1.7's GRPO learner computes rollouts (and reference log-probabilities) in a
    worker thread and trains in the main thread; with asynchronous dispatch a worker's last
    computation can still be running when the main thread starts the next, and the two threads'
    collectives then interleave differently per process (gloo: "Received data size doesn't match
    expected size ... collective mismatch", seen with two processes). Given as the learner's
    executor, it makes the run single-threaded; rollout and training did not overlap anyway
    while actor and rollout share one mesh."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> futures.Future[T]:
        future: futures.Future[T] = futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as a thread pool would
            future.set_exception(exc)
        return future


# ----------------------------------------------------------------------------------------
# preemption and failure


def preemption_reached(step: int) -> bool:
    """True when ``step`` is JAX's preemption sync point: a SIGTERM reached some process and every
    process stops at this same step (orbax saved a checkpoint for it). Always False without
    ``jax.distributed``, where SIGTERM ends the process as usual."""
    if process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(int(step)))
    except RuntimeError:  # the preemption service is switched off (jax_enable_preemption_service)
        return False


def watch_preemption(checkpoint_manager: Any) -> Any:
    """Make a Tunix ``CheckpointManager`` raise :class:`Preempted` right after the save of a
    preemption sync step, once the checkpoint is committed. Tunix trainers offer its ``save``
    every update, and orbax saves at that step on its own; the trainer's loop then ends there.
    Returns the manager (its class is switched to a subclass that adds no state)."""
    base = type(checkpoint_manager)
    if getattr(base, "_dsa_cast_watches_preemption", False) or process_count() == 1:
        return checkpoint_manager
    checkpoint_manager.__class__ = _preemption_watching(base)
    return checkpoint_manager


@functools.cache
def _preemption_watching(base: type) -> type:
    class PreemptionWatchingCheckpointManager(base):  # type: ignore[misc, valid-type]
        _dsa_cast_watches_preemption = True

        def save(self, step: int, *args: Any, **kwargs: Any) -> bool:
            saved = super().save(step, *args, **kwargs)
            if preemption_reached(step):
                inner = getattr(self, "_checkpoint_manager", None)
                if inner is not None:
                    inner.wait_until_finished()
                raise Preempted(step, getattr(inner, "directory", None))
            return saved

    return PreemptionWatchingCheckpointManager


def exit_now(status: int) -> None:
    """End this process at once with ``status`` after flushing logs and streams.

    A multi-process run that failed on this process must not wait in JAX's shutdown barrier for
    peers that may be gone or stuck in a collective with it (that wait lasts until the heartbeat
    timeout and ends in an abort); single-process runs just exit."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if process_count() > 1:
        os._exit(status)
    sys.exit(status)
