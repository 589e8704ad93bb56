"""Peak resident memory (RSS) of this process, per pipeline stage.

All stages of ``python -m dsa_cast_train.pipeline`` run in one process, so the process-wide
``getrusage`` peak only ever grows. On Linux the kernel's high-water mark (``VmHWM`` in
``/proc/self/status``) can be reset by writing ``5`` to ``/proc/self/clear_refs``; a stage that
resets it first and reads it at the end gets its own peak. Elsewhere (or when the reset is not
permitted) the figure is the process peak so far, and :attr:`StagePeak.per_stage` says so.
Pure stdlib.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS_FILE = Path("/proc/self/clear_refs")
RESET_PEAK = "5"
"""``clear_refs`` command that resets the peak RSS (Linux >= 4.0, ``Documentation/filesystems/proc``)."""
MIB = 1024 * 1024


@dataclass(frozen=True)
class StagePeak:
    """Peak RSS of a stretch of work."""

    peak_bytes: int
    per_stage: bool
    """``True``: the peak of this stretch only (the high-water mark was reset at its start);
    ``False``: the process peak since it started."""

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    def as_dict(self) -> dict[str, object]:
        return {"peak_rss_mib": round(self.peak_mib, 1), "peak_rss_per_stage": self.per_stage}


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``), or ``None`` off Linux."""
    try:
        text = STATUS_FILE.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def process_peak_bytes() -> int:
    """The process's peak RSS since it started (``getrusage``; kB on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


def current_rss_bytes() -> int | None:
    """Resident memory now (``VmRSS``), or ``None`` where ``/proc`` is absent."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process; ``True`` when that worked."""
    try:
        with CLEAR_REFS_FILE.open("w", encoding="ascii") as fh:
            fh.write(RESET_PEAK)
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakTracker:
    """``with PeakTracker() as t: ...`` then ``t.result`` is the :class:`StagePeak` of the block."""

    def __init__(self) -> None:
        self.result: StagePeak | None = None
        self._reset = False

    def __enter__(self) -> PeakTracker:
        self._reset = reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = measure(self._reset)


def measure(was_reset: bool) -> StagePeak:
    """The peak since the last successful :func:`reset_peak` (``was_reset``), else the process peak."""
    hwm = _status_kib("VmHWM") if was_reset else None
    if hwm is not None:
        return StagePeak(peak_bytes=hwm * 1024, per_stage=True)
    return StagePeak(peak_bytes=process_peak_bytes(), per_stage=False)


def release() -> int | None:
    """Hand memory the last stage left behind back to the OS; returns the RSS afterwards.

    Between pipeline stages nothing of the previous stage's model is needed, but its freed
    buffers can stay resident: ``gc.collect()`` drops reference cycles (nnx modules hold
    some), ``jax.clear_caches()`` drops compiled executables and the constants they captured
    (only when JAX is already imported), and glibc's ``malloc_trim(0)`` returns freed heap
    pages (XLA:CPU buffers come from ``malloc``). Each step is skipped where unavailable.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    if sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        if name:
            try:
                ctypes.CDLL(name).malloc_trim(0)
            except (OSError, AttributeError):
                pass
    return current_rss_bytes()
