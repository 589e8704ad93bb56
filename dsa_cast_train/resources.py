"""Does this machine have the memory and disk a preset needs? Checked before minutes are spent.

A preset's ``[requirements]`` (:class:`dsa_cast_train.config.Requirements`) give the measured
peak memory and disk of the whole pipeline. :func:`check` compares them with what is available
now: memory from ``/proc/meminfo`` (``MemAvailable``) and, inside a container, the cgroup
limit (``memory.max`` less ``memory.current``); disk from ``shutil.disk_usage`` of the run
directory (less what an earlier start already wrote there) and of the model cache. Standard
library only; where a figure cannot be read (not Linux), it is reported as unknown and not held
against the preset.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
GB = 10**9
MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Need:
    """One resource: what the preset needs, what is available (``None``: unknown), and where."""

    what: str
    """``memory`` or ``disk``."""
    needed: float
    available: float | None
    unit: str
    """``GiB`` or ``GB``."""
    where: str

    @property
    def fits(self) -> bool:
        return self.available is None or self.available >= self.needed

    def describe(self) -> str:
        have = "unknown" if self.available is None else f"{_num(self.available)} {self.unit}"
        return f"{self.what}: needs about {_num(self.needed)} {self.unit}, {have} available ({self.where})"


def _num(x: float) -> str:
    """``14.3``, ``0.01``: one decimal, or two significant digits below 1."""
    return f"{x:.1f}" if x >= 1 or x == 0 else f"{x:.2g}"


@dataclass(frozen=True)
class Check:
    """The outcome of :func:`check` for one preset."""

    preset: str
    needs: tuple[Need, ...]
    smaller: str | None
    minutes: float | None

    @property
    def fits(self) -> bool:
        return all(n.fits for n in self.needs)

    @property
    def short(self) -> tuple[Need, ...]:
        return tuple(n for n in self.needs if not n.fits)

    def summary(self) -> str:
        """``needs 14.3 GiB memory (20.1 available), 7.8 GB disk (52.0 available), about 13 min on a
        quiet 2-core CPU``."""
        parts = [f"{_num(n.needed)} {n.unit} {n.what} ({'?' if n.available is None else _num(n.available)} available)"
                 for n in self.needs]
        if self.minutes:
            parts.append(f"about {self.minutes:g} min on a quiet 2-core CPU")
        return "needs " + ", ".join(parts) if parts else "needs nothing measured"

    def shortfall(self) -> str:
        """``this machine cannot run preset X: memory: needs about ..., ... available (...)``."""
        return f"this machine cannot run preset {self.preset}: " + "; ".join(n.describe() for n in self.short)

    def refusal(self) -> str:
        """The error for a preset that does not fit: every short resource with its numbers, and
        what to run instead."""
        text = self.shortfall()
        instead = f"run a smaller preset (--preset {self.smaller}), " if self.smaller else ""
        return (f"{text}. Either {instead}free the memory or disk named above, or name the preset "
                f"explicitly (--preset {self.preset}) to start anyway")


def _meminfo_bytes(field: str, text: str) -> int | None:
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == field:
            parts = rest.split()
            if parts and parts[0].isdigit():
                return int(parts[0]) * 1024 if (len(parts) < 2 or parts[1] == "kB") else int(parts[0])
    return None


def _cgroup_room(root: Path = CGROUP) -> int | None:
    """Bytes the cgroup v2 limit still allows (``memory.max - memory.current``), if limited."""
    try:
        limit = (root / "memory.max").read_text().strip()
        current = (root / "memory.current").read_text().strip()
    except OSError:
        return None
    if not limit.isdigit() or not current.isdigit():
        return None  # "max": no limit
    return max(int(limit) - int(current), 0)


def available_memory(meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> int | None:
    """Bytes of memory a new process can use without swapping: ``MemAvailable``, capped by the
    cgroup's remaining room; ``None`` when unknown."""
    try:
        avail = _meminfo_bytes("MemAvailable", meminfo.read_text())
    except OSError:
        avail = None
    room = _cgroup_room(cgroup)
    known = [v for v in (avail, room) if v is not None]
    return min(known) if known else None


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (where a new directory would be created)."""
    path = path.expanduser().absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_disk(path: str | Path) -> int | None:
    """Free bytes on the file system that holds (or would hold) ``path``."""
    try:
        return shutil.disk_usage(_existing(Path(path))).free
    except OSError:
        return None


def tree_bytes(path: str | Path) -> int:
    """Bytes of the regular files under ``path`` (0 when absent; symlinks not followed)."""
    root = Path(path)
    if not root.is_dir():
        return 0
    total = 0
    for item in root.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def _model_cached(config) -> bool:
    """Whether the converted PyPI Gemma is already in its cache (no disk needed for it)."""
    from dsa_cast_train import gemma_pypi

    root = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else gemma_pypi.default_cache_dir()
    return root.is_dir() and any((d / gemma_pypi.MANIFEST_NAME).is_file() for d in root.iterdir() if d.is_dir())


def check(config, run_dir: str | Path) -> Check:
    """Compare ``config.requirements`` with this machine. Disk of the run directory counts what
    an earlier start already wrote there as used; the converted model counts only until it is in its cache,
    and on the run directory's file system the two add up."""
    req = config.requirements
    needs: list[Need] = []
    if req.memory_gib is not None:
        avail = available_memory()
        needs.append(Need("memory", req.memory_gib, None if avail is None else avail / GIB, "GiB",
                          "MemAvailable" + (" / cgroup limit" if _cgroup_room() is not None else "")))
    run_fs = _existing(Path(run_dir))
    disk = {run_fs: (max(req.run_disk_gb - tree_bytes(run_dir) / GB, 0.0), ["run directory"])} \
        if req.run_disk_gb is not None else {}
    if req.model_disk_gb is not None and config.model.source == "gemma3-270m-pypi" and not _model_cached(config):
        from dsa_cast_train import gemma_pypi

        cache = Path(config.model.cache_dir).expanduser() if config.model.cache_dir else gemma_pypi.default_cache_dir()
        cache_fs = _existing(cache)
        key = next((k for k in disk if k.stat().st_dev == cache_fs.stat().st_dev), cache_fs)
        gb, what = disk.get(key, (0.0, []))
        disk[key] = (gb + req.model_disk_gb, [*what, f"converted model in {cache}"])
    for where, (gb, what) in disk.items():
        free = free_disk(where)
        needs.append(Need("disk", gb, None if free is None else free / GB, "GB",
                          f"{' + '.join(what)}, file system of {where}"))
    return Check(config.name, tuple(needs), req.smaller, req.minutes)
