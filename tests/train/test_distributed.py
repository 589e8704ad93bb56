"""Multi-host plumbing without a second process: settings, the mesh check, single-process
pass-through of the agreement helpers, the inline executor, failed starts that leave nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsa_cast_train import distributed
from dsa_cast_train.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- settings


def test_nothing_set_means_a_single_process():
    s = distributed.settings_from_env({})
    assert not s.requested
    assert distributed.initialize(s) is False


@pytest.mark.parametrize("env, requested", [
    ({"DSA_CAST_DISTRIBUTED": "1"}, True),
    ({"DSA_CAST_DISTRIBUTED": "true"}, True),
    ({"DSA_CAST_DISTRIBUTED": "0"}, False),
    ({"DSA_CAST_DISTRIBUTED": "auto"}, False),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),  # jax reads it itself
    ({"DSA_CAST_DISTRIBUTED": "0", "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, False),
    ({"DSA_CAST_COORDINATOR": "10.0.0.1:1234", "DSA_CAST_NUM_PROCESSES": "2",
      "DSA_CAST_PROCESS_ID": "1"}, True),
])
def test_what_asks_for_a_distributed_start(env, requested):
    assert distributed.settings_from_env(env).requested is requested


def test_env_values_and_flags_over_them():
    env = {"DSA_CAST_COORDINATOR": "head:7000", "DSA_CAST_NUM_PROCESSES": "4", "DSA_CAST_PROCESS_ID": "3",
           "DSA_CAST_HEARTBEAT_SECONDS": "15", "DSA_CAST_INIT_TIMEOUT_SECONDS": "60"}
    s = distributed.settings_from_env(env)
    assert (s.coordinator, s.num_processes, s.process_id) == ("head:7000", 4, 3)
    assert (s.heartbeat_seconds, s.init_timeout_seconds) == (15, 60)
    flagged = distributed.settings_from_env(env, process_id=0, coordinator=None)
    assert flagged.process_id == 0 and flagged.coordinator == "head:7000"  # None leaves the env value
    # explicit flags win over DSA_CAST_DISTRIBUTED=0
    assert distributed.settings_from_env({"DSA_CAST_DISTRIBUTED": "0"}, coordinator="h:1", num_processes=2,
                                         process_id=0).requested


@pytest.mark.parametrize("env, message", [
    ({"DSA_CAST_NUM_PROCESSES": "two"}, r"DSA_CAST_NUM_PROCESSES: expected an integer, got 'two'"),
    ({"DSA_CAST_NUM_PROCESSES": "2", "DSA_CAST_PROCESS_ID": "2"}, r"process id \(2\) must be below"),
    ({"DSA_CAST_PROCESS_ID": "-1"}, r"process id must be at least 0"),
    ({"DSA_CAST_NUM_PROCESSES": "0"}, r"process count must be at least 1"),
    ({"DSA_CAST_COORDINATOR": "localhost"}, r"HOST:PORT, got 'localhost'"),
    ({"DSA_CAST_COORDINATOR": "localhost:99999"}, r"HOST:PORT"),
    ({"DSA_CAST_DISTRIBUTED": "maybe"}, r"DSA_CAST_DISTRIBUTED: expected 1 or 0"),
    ({"DSA_CAST_HEARTBEAT_SECONDS": "0"}, r"heartbeat_seconds must be at least 1"),
])
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.settings_from_env(env)


# ---------------------------------------------------------------------------- single process


def test_single_process_roles_and_helpers_pass_through(tmp_path):
    assert distributed.process_count() == 1 and distributed.process_index() == 0 and distributed.is_primary()
    assert distributed.per_process_name("run.log") == "run.log"
    assert distributed.async_checkpointing()
    assert distributed.all_gather_text("x", "hello") == ["hello"]
    assert distributed.decide("d", lambda: 41 + 1, encode=str, decode=int) == 42
    distributed.barrier("b")
    distributed.check_shared_directory(tmp_path)  # nothing to prove: no probe file is left
    assert list(tmp_path.iterdir()) == []
    assert distributed.preemption_reached(5) is False

    class Manager:
        def save(self, step):
            return True

    m = Manager()
    assert distributed.watch_preemption(m) is m and type(m) is Manager  # untouched on one process


def test_preempted_message_says_how_to_resume(tmp_path):
    exc = distributed.Preempted(7, tmp_path)
    assert exc.step == 7 and str(tmp_path) in str(exc) and "run the same command again" in str(exc)


def test_inline_executor_runs_in_the_calling_thread():
    ex = distributed.InlineExecutor()
    caller = threading.get_ident()
    assert ex.submit(threading.get_ident).result() == caller
    assert ex.submit(lambda a, b=0: a + b, 2, b=3).result() == 5
    failed = ex.submit(lambda: 1 / 0)
    assert failed.done() and isinstance(failed.exception(), ZeroDivisionError)
    ex.shutdown()


# ---------------------------------------------------------------------------- mesh


@dataclass(frozen=True)
class FakeDevice:
    id: int
    process_index: int


def _devices(processes: int, per_process: int) -> list[FakeDevice]:
    return [FakeDevice(p * per_process + i, p) for p in range(processes) for i in range(per_process)]


def test_default_mesh_uses_every_process():
    from dsa_cast_train import models

    fsdp, tp, chosen = models.mesh_devices(_devices(2, 1), None, None, process_count=2)
    assert (fsdp, tp) == (2, 1) and len(chosen) == 2
    fsdp, tp, chosen = models.mesh_devices(_devices(4, 4), None, 4, process_count=4)
    assert (fsdp, tp) == (4, 4) and len(chosen) == 16


@pytest.mark.parametrize("processes, per_process, fsdp, tp", [(2, 1, 1, 1), (2, 4, 1, 4), (4, 2, 2, 2)])
def test_mesh_leaving_a_process_out_is_refused(processes, per_process, fsdp, tp):
    from dsa_cast_train import models

    with pytest.raises(ConfigError, match=r"none of process\(es\) .*mesh\.fsdp=none"):
        models.mesh_devices(_devices(processes, per_process), fsdp, tp, process_count=processes)


def test_smaller_mesh_on_one_process_is_allowed():
    from dsa_cast_train import models

    assert models.mesh_devices(_devices(1, 4), 1, 2, process_count=1)[:2] == (1, 2)


# ---------------------------------------------------------------------------- failed starts (CLI)


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DSA_CAST_", "JAX_COORDINATOR"))}
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")])
    full.update(env)
    return subprocess.run([sys.executable, "-m", "dsa_cast_train.sft", "--preset", "tiny", *args],
                          capture_output=True, text=True, timeout=120, env=full)


def test_bad_process_flags_exit_2_before_the_run_dir_exists(tmp_path):
    run_dir = tmp_path / "run"
    proc = _cli(["--run-dir", str(run_dir), "--num-processes", "2", "--process-id", "2"])
    assert proc.returncode == 2
    assert "error: the process id (2) must be below the process count (2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()


@pytest.mark.train
def test_unreachable_coordinator_exits_2_and_leaves_nothing(tmp_path):
    """Process 1 alone: nobody answers at the coordinator address; within the init timeout it
    says what to check, and no run directory is made."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    proc = _cli(["--run-dir", str(run_dir), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                 "--process-id", "1"], DSA_CAST_INIT_TIMEOUT_SECONDS="3")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: cannot start jax.distributed" in proc.stderr and "process 0 runs" in proc.stderr
    assert not run_dir.exists()
