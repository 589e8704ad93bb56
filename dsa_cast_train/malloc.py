"""glibc ``malloc`` settings for the trainers, applied when :mod:`dsa_cast_train` is imported.

A GRPO step allocates and frees host buffers of tens to hundreds of MiB (XLA:CPU temporaries,
rollout batches, checkpoint staging) from several threads. glibc's defaults serve them from up
to ``8 x cores`` arenas and raise the ``mmap`` threshold dynamically up to 32 MiB, so freed
blocks stay in the arenas and the resident set keeps the high-water mark of every thread's
pattern. Two settings return them to the kernel instead:

- ``M_ARENA_MAX = 2``: at most two arenas;
- ``M_MMAP_THRESHOLD = 1 MiB`` (fixed, which also switches the dynamic raise off): blocks of
  1 MiB and more are ``mmap``-ed and unmapped when freed.

Measured (``benchmarks/bench_grpo_memory.py``, Gemma 3 270M, 8 generations of 192 + 320
tokens, lean loss, the same settings given as ``MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576``):
peak RSS 15.54 -> 13.37 GiB; step time 230 -> 245 s, one step each on a loaded 2-core box.

Not applied where the user set the same thing (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``
or the ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``), with ``DSA_CAST_MALLOC_TUNING=0``, or
outside glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = {
    "arena_max": (M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"),
    "mmap_threshold": (M_MMAP_THRESHOLD, 1 << 20, "MALLOC_MMAP_THRESHOLD_"),
}
"""name -> (mallopt parameter, value, the environment variable that overrides it)."""


def planned(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """The settings :func:`apply` would make under ``env`` (``os.environ`` by default)."""
    env = os.environ if env is None else env
    if env.get("DSA_CAST_MALLOC_TUNING", "1").strip() == "0":
        return {}
    tunables = env.get("GLIBC_TUNABLES", "")
    return {name: value for name, (_, value, var) in SETTINGS.items()
            if var not in env and f"glibc.malloc.{name}" not in tunables}


def apply(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Make the :func:`planned` settings with ``mallopt``; returns those that glibc accepted
    (empty outside glibc)."""
    todo = planned(env)
    if not todo or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return {}
    done = {}
    for name, value in todo.items():
        if libc.mallopt(ctypes.c_int(SETTINGS[name][0]), ctypes.c_int(value)) == 1:
            done[name] = value
    return done
