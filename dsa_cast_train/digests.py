"""Per-file sha256 digests of orbax checkpoint steps: recorded once a step is committed, checked
before it is restored or exported, so a corrupted step is an error naming the file, never used.

Layout: ``<root>/<step>/dsa_cast_digests.json`` (inside the step directory, so it goes wherever
the step goes and orbax removes it with the step)::

    {"format": "dsa-cast-checkpoint-digests/1", "step": 6,
     "files": {"model_params/manifest.ocdbt": {"sha256": "...", "size": 115}, ...}}

:func:`track` wraps a Tunix checkpoint manager so that each save records the digests of the steps
orbax has finished by then (orbax waits for the previous save before starting a new one);
:func:`record_new` records the rest once training ends. :func:`verify` re-hashes the recorded
files (optionally only some items, e.g. ``model_params`` for a parameters-only restore).

The digests detect corruption (flipped bytes, truncation, a missing file), not tampering: whoever
can rewrite a tensor file can rewrite the digest file too. A step saved before digests existed,
or by a run killed between orbax's commit and the record, has no digest: it is restored with a
warning that it could not be verified.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsa_cast import io

log = logging.getLogger(__name__)

__all__ = ["DIGEST_FILE", "CheckpointError", "record", "record_new", "track", "verify", "verify_newest"]

DIGEST_FILE = "dsa_cast_digests.json"
FORMAT = "dsa-cast-checkpoint-digests/1"
_CHUNK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint step that cannot be used: a file differs from its recorded digest, is missing,
    or orbax cannot read the step. The message names the file or step."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != DIGEST_FILE)


def record(step_dir: str | Path) -> Path:
    """Hash every file of a committed step directory and write its digest file (atomically)."""
    step_dir = Path(step_dir)
    files = {p.relative_to(step_dir).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
             for p in _files(step_dir)}
    out = step_dir / DIGEST_FILE
    step = int(step_dir.name) if step_dir.name.isdigit() else None
    io.atomic_write_json(out, {"format": FORMAT, "step": step, "files": files}, indent=1, sort_keys=True)
    return out


def record_new(root: str | Path, *, before: int | None = None) -> list[int]:
    """Record the digests of the committed steps under ``root`` that have none (only those below
    ``before`` when given: the step being saved may still be in flight); returns their steps."""
    from dsa_cast_train import models

    done = []
    for step in models.checkpoint_steps(root):
        step_dir = Path(root) / str(step)
        if (before is None or step < before) and not (step_dir / DIGEST_FILE).exists():
            record(step_dir)
            done.append(step)
    return done


def track(manager: Any, root: str | Path) -> None:
    """Make every ``manager.save(step, ...)`` (a Tunix checkpoint manager) record the digests of
    the steps orbax has committed by then (those before ``step``).

    The class's ``save`` is looked up at each call, not bound now: a later change of the manager's
    class (:func:`dsa_cast_train.distributed.watch_preemption`) must still take effect."""

    def save_and_record(step: int, *args: Any, **kwargs: Any) -> Any:
        saved = type(manager).save(manager, step, *args, **kwargs)
        record_new(root, before=step)
        return saved

    manager.save = save_and_record


def _read(step_dir: Path) -> dict[str, Any] | None:
    path = step_dir / DIGEST_FILE
    if not path.exists():
        return None
    try:
        data = io.load_json(path)
        files = data["files"]
        if data.get("format") != FORMAT or not isinstance(files, dict):
            raise KeyError("format")
        for rel, entry in files.items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("size"), int)):
                raise KeyError(rel)
    except (io.InputError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint digest file ({exc}); the step cannot be "
                              f"verified") from None
    return files


def verify(step_dir: str | Path, items: Sequence[str] | None = None) -> bool:
    """Check the files of a step against its recorded digests (only those under ``items`` when
    given); True when verified, False when the step has no digest file (cannot be verified).
    Raises :class:`CheckpointError` naming the first file that is missing or differs."""
    step_dir = Path(step_dir)
    files = _read(step_dir)
    if files is None:
        return False
    prefixes = tuple(f"{item}/" for item in items) if items else None
    for rel, entry in sorted(files.items()):
        if prefixes is not None and not rel.startswith(prefixes):
            continue
        path = step_dir / rel
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from checkpoint step {step_dir.name} (recorded when it "
                                  f"was saved); the step is incomplete and is not used")
        size = path.stat().st_size
        if size != entry["size"] or _sha256(path) != entry["sha256"]:
            raise CheckpointError(
                f"{path}: {'size' if size != entry['size'] else 'sha256'} differs from the digest recorded "
                f"when checkpoint step {step_dir.name} was saved: the file is corrupt, the step is not used "
                f"(restore it from a copy, or use an earlier step)")
    return True


def verify_newest(root: str | Path, items: Sequence[str] | None = None) -> int | None:
    """:func:`verify` the newest committed step under ``root`` (what a trainer resumes from);
    returns that step (None when there is none), logging a warning when it has no digest."""
    from dsa_cast_train import models

    steps = models.checkpoint_steps(root)
    if not steps:
        return None
    step_dir = Path(root) / str(steps[-1])
    if not verify(step_dir, items):
        log.warning("checkpoint %s has no %s: restored without verification", step_dir, DIGEST_FILE)
    return steps[-1]
