"""Export trained checkpoints: a verified zip archive and a HuggingFace safetensors directory.

Two artefacts, both written atomically (temporary name, verification, then ``os.replace``), so an
interrupted export never leaves a broken file under the final name:

* **Zip** (:func:`export_zip`): one orbax checkpoint step (by default the newest actor step of a
  GRPO run) plus the run's resolved config and metrics, with ``MANIFEST.json`` holding the sha256 and
  size of every member. :func:`unpack` re-checks every hash and refuses members whose path would
  escape the target directory (absolute paths, ``..``, symlinks).
* **Safetensors** (:func:`export_safetensors`): full parameters under HuggingFace
  ``Gemma3ForCausalLM`` names, the exact inverse of the key mapping and transforms in
  ``tunix.models.gemma3.params_safetensors`` (Tunix 0.1.7 only exports LoRA merges), plus
  ``config.json`` and the HF tokenizer files (``tokenizer.model``, ``tokenizer.json``,
  ``tokenizer_config.json`` with the chat template, ``generation_config.json``:
  :mod:`dsa_cast_train.hf_tokenizer`). The directory reloads through Tunix's own
  ``create_model_from_safe_tensors`` to bit-identical parameters, and through transformers'
  ``AutoTokenizer`` / ``AutoModelForCausalLM`` to the project's prompt ids and greedy tokens.

CLI: ``python -m dsa_cast_train.export --run-dir RUN [--step N] [--out FILE.zip] [--safetensors DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from dsa_cast import io as dsa_io
from dsa_cast_train import digests

log = logging.getLogger("dsa_cast_train.export")

MANIFEST_NAME = "MANIFEST.json"
MANIFEST_FORMAT = "dsa-cast-export/1"
MAX_MANIFEST_BYTES = 64 << 20  # a manifest larger than this is refused before it is parsed
DEFAULT_MAX_UNPACK_BYTES = 1 << 40
"""``unpack`` refuses an archive whose members declare more than this in total (1 TiB: generous,
for the largest checkpoints; lower it with ``max_bytes`` / ``--max-unpack-bytes`` for archives
from elsewhere). It also refuses one that does not fit the target's free disk space."""
HF_MARKER = ".dsa-cast-export.json"
"""In a safetensors directory written here: the files it holds. ``overwrite`` replaces only a
directory that has it and nothing else (user files are never deleted)."""
_HASH_CHUNK_BYTES = 1 << 20  # streaming block size for hashing and copying; bounds memory per file
_TAMPER_NOTE = ("the manifest's sha256 list detects corruption, not tampering by someone who can "
                "rewrite the manifest: compare the archive's own sha256 with the one printed at export")

# Where a run directory keeps its checkpoints, most specific first. ``grpo`` runs write the actor
# under ``checkpoints/actor/<step>`` (RLCluster layout); ``sft`` runs under ``checkpoints/<step>``;
# a pipeline run directory holds each stage in a subdirectory.
CHECKPOINT_LAYOUTS: tuple[str, ...] = (
    "checkpoints/actor",
    "grpo/checkpoints/actor",
    "checkpoints",
    "sft/checkpoints",
)
# Run-directory files copied into the archive next to the checkpoint, when present.
RUN_FILE_PATTERNS: tuple[str, ...] = ("config.*", "resolved_config.*", "*metrics*.jsonl", "*/config.*",
                                      "*/resolved_config.*", "*/*metrics*.jsonl")


class ExportError(RuntimeError):
    """A checkpoint could not be exported, or an archive failed verification."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One archive member as recorded in the manifest."""

    path: str
    sha256: str
    size: int


@dataclasses.dataclass(frozen=True)
class ZipExport:
    """Result of :func:`export_zip`."""

    path: Path
    step: int
    checkpoint_dir: Path
    files: int
    bytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SafetensorsExport:
    """Result of :func:`export_safetensors`."""

    directory: Path
    tensors: int
    parameters: int
    dtype: str
    verified: bool


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Result of :func:`run`: the zip and (optionally) the safetensors directory."""

    zip: ZipExport | None
    safetensors: SafetensorsExport | None


# --------------------------------------------------------------------------------------------
# hashing and checkpoint discovery
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_steps(checkpoint_root: str | Path) -> list[int]:
    """Finished orbax step directories under ``checkpoint_root``, ascending.

    Orbax writes each step under a temporary name and renames it when done, so only directories
    whose name is an integer count as finished.
    """
    root = Path(checkpoint_root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def resolve_checkpoint_root(run_dir: str | Path, checkpoint_root: str | Path | None = None) -> Path:
    """The checkpoint root to export from: ``checkpoint_root`` if given, else the first layout in
    :data:`CHECKPOINT_LAYOUTS` under ``run_dir`` that holds a finished step."""
    if checkpoint_root is not None:
        root = Path(checkpoint_root)
        if not checkpoint_steps(root):
            raise ExportError(f"{root}: no finished checkpoint step (integer-named directory) found")
        return root
    run = Path(run_dir)
    for rel in CHECKPOINT_LAYOUTS:
        if checkpoint_steps(run / rel):
            return run / rel
    tried = ", ".join(str(run / rel) for rel in CHECKPOINT_LAYOUTS)
    raise ExportError(f"{run}: no checkpoint found; looked for step directories in {tried}")


def _run_files(run_dir: Path) -> list[Path]:
    """Resolved-config and metrics files of a run directory, for the archive."""
    found: dict[Path, None] = {}
    for pattern in RUN_FILE_PATTERNS:
        for p in sorted(run_dir.glob(pattern)):
            if p.is_file() and not p.is_symlink():
                found[p] = None
    return list(found)


def _read_json_or_none(path: Path) -> Any:
    try:
        return dsa_io.load_json(path)
    except dsa_io.InputError:
        return None


def _last_jsonl_record(path: Path) -> dict | None:
    """The last good record (a torn last line from a killed writer is not the archive's concern)."""
    records = dsa_io.read_jsonl(path, skip_bad=True).records
    return records[-1][1] if records else None


def is_export_archive(path: str | Path) -> bool:
    """Whether ``path`` is a zip whose ``MANIFEST.json`` has this project's format (not verified:
    what makes an existing file ours to replace)."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(MANIFEST_NAME)
            if info.file_size > MAX_MANIFEST_BYTES:
                return False
            return dsa_io.parse_json(zf.read(info), MANIFEST_NAME).get("format") == MANIFEST_FORMAT
    except (zipfile.BadZipFile, KeyError, OSError, dsa_io.InputError, RuntimeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# zip export / verification / unpack
# --------------------------------------------------------------------------------------------


def export_zip(
    run_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    step: int | None = None,
    checkpoint_root: str | Path | None = None,
    include_optimizer: bool = True,
    compression: int = zipfile.ZIP_STORED,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> ZipExport:
    """Archive one checkpoint step of ``run_dir`` into a verified zip.

    ``step`` defaults to the newest finished step. The archive holds ``checkpoint/<step>/...``,
    ``run/<config and metrics files>`` and ``MANIFEST.json`` (format, step, resolved config, last
    metrics record per metrics file, and sha256/size of every member). It is written to a
    temporary file beside ``out_path``, re-read and hash-checked, then renamed into place.
    ``include_optimizer=False`` leaves out the ``optimizer_state`` subtree (a params-only archive).
    ``compression`` is a :mod:`zipfile` constant; the default stores members uncompressed
    (checkpoint tensors barely compress and deflating gigabytes is slow).

    The step is first checked against the digests recorded when it was saved
    (:mod:`dsa_cast_train.digests`): a corrupted file is an :class:`ExportError` naming it. An
    existing ``out_path`` is replaced only when it is this project's archive, or with
    ``overwrite``; the archive never replaces one of its own inputs.
    """
    run = Path(run_dir)
    root = resolve_checkpoint_root(run, checkpoint_root)
    step = _pick_step(root, step)
    step_dir = root / str(step)
    out = Path(out_path) if out_path is not None else run / "export" / f"{run.resolve().name}_step{step}.zip"
    _check_zip_destination(out, overwrite)
    _verify_step(step_dir, include_optimizer)
    out.parent.mkdir(parents=True, exist_ok=True)

    members = _checkpoint_members(step_dir, step, include_optimizer)
    run_members, metrics_summary = _run_members(run)
    members += run_members
    if config is None:
        config = _run_config(run)

    try:
        dsa_io.refuse_inputs(out, [p for p, _ in members])
    except dsa_io.OutputError as exc:
        raise ExportError(str(exc)) from exc
    entries = [FileEntry(arc, sha256_file(p), p.stat().st_size) for p, arc in members]
    manifest = _manifest(step, step_dir, include_optimizer, config, metrics_summary, entries)
    _write_zip_atomically(out, members, manifest, compression)
    total = sum(e.size for e in entries)
    log.info("exported step %d (%d files, %d bytes) to %s", step, len(entries), total, out)
    return ZipExport(out, step, step_dir, len(entries), total, sha256_file(out))


def _manifest(step: int, step_dir: Path, include_optimizer: bool, config: Mapping[str, Any] | None,
              metrics_summary: dict[str, Any], entries: Sequence[FileEntry]) -> dict[str, Any]:
    """``MANIFEST.json``'s content: what was archived, from where, and every member's sha256/size."""
    return {
        "format": MANIFEST_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "step": step,
        "checkpoint_dir": str(step_dir),
        "include_optimizer": include_optimizer,
        "config": dict(config) if config is not None else None,
        "metrics": metrics_summary,
        "files": [dataclasses.asdict(e) for e in entries],
    }


def _pick_step(root: Path, step: int | None) -> int:
    """``step`` if it is a finished step under ``root``, the newest finished step when None."""
    steps = checkpoint_steps(root)
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ExportError(f"{root}: step {step} not found; available steps: {steps}")
    return step


def _check_zip_destination(out: Path, overwrite: bool) -> None:
    """Refuse a directory, and an existing file that is not our archive unless ``overwrite``."""
    if out.is_dir():
        raise ExportError(f"{out}: is a directory; --out names the zip file")
    if out.exists() and not overwrite and not is_export_archive(out):
        raise ExportError(f"{out}: exists and is not a dsa-cast export archive; refusing to replace it "
                          f"(pass --overwrite / overwrite=True, or choose another --out)")


def _verify_step(step_dir: Path, include_optimizer: bool) -> None:
    """Check the step against the digests recorded when it was saved (a warning when it has none)."""
    try:
        if not digests.verify(step_dir, None if include_optimizer else ("model_params",)):
            log.warning("checkpoint %s has no %s: archived without verification", step_dir, digests.DIGEST_FILE)
    except digests.CheckpointError as exc:
        raise ExportError(str(exc)) from exc


def _checkpoint_members(step_dir: Path, step: int, include_optimizer: bool) -> list[tuple[Path, str]]:
    """``(file, archive name)`` for every file of the step (``optimizer_state`` only if included)."""
    members: list[tuple[Path, str]] = []
    for p in sorted(step_dir.rglob("*")):
        rel = p.relative_to(step_dir)
        if p.is_symlink():
            raise ExportError(f"{p}: symlinks are not exported")
        if not p.is_file():
            continue
        if not include_optimizer and rel.parts and rel.parts[0] == "optimizer_state":
            continue
        members.append((p, f"checkpoint/{step}/{rel.as_posix()}"))
    if not members:
        raise ExportError(f"{step_dir}: checkpoint step holds no files")
    return members


def _run_members(run: Path) -> tuple[list[tuple[Path, str]], dict[str, Any]]:
    """The run's config and metrics files as ``(file, archive name)``, and the last record of each
    metrics file (for the manifest)."""
    members: list[tuple[Path, str]] = []
    metrics_summary: dict[str, Any] = {}
    for p in _run_files(run):
        rel = p.relative_to(run).as_posix()
        members.append((p, f"run/{rel}"))
        if p.suffix == ".jsonl":
            metrics_summary[rel] = _last_jsonl_record(p)
    return members, metrics_summary


def _run_config(run: Path) -> Any:
    """The run's resolved config as JSON (``config.json``, else ``resolved_config.json``), or None."""
    for name in ("config.json", "resolved_config.json"):
        cfg = _read_json_or_none(run / name)
        if cfg is not None:
            return cfg
    return None


def _write_zip_atomically(out: Path, members: Sequence[tuple[Path, str]], manifest: Mapping[str, Any],
                          compression: int) -> None:
    """Write the zip to a temporary file beside ``out``, fsync and verify it, then rename it into
    place; on any failure the temporary file is removed and ``out`` is left as it was."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", compression=compression, allowZip64=True) as zf:
            for p, arc in members:
                zf.write(p, arc)
            zf.writestr(MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        verify_zip(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_symlink_member(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_member_name(zip_path: Path, name: str) -> PurePosixPath:
    """The member's relative path, or :class:`ExportError` if it could escape the target or is not
    written the one canonical way (``a//b``, ``a/./b``: a file system would make it an alias)."""
    if not name or "\\" in name or "\x00" in name:
        raise ExportError(f"{zip_path}: member {name!r}: unsafe path (backslash, NUL or empty)")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise ExportError(f"{zip_path}: member {name!r}: absolute path escapes the target directory")
    parts = name.rstrip("/").split("/")
    if any(part == ".." for part in parts):
        raise ExportError(f"{zip_path}: member {name!r}: '..' escapes the target directory")
    if p.parts and ":" in p.parts[0]:
        raise ExportError(f"{zip_path}: member {name!r}: drive-qualified path escapes the target directory")
    if any(part in ("", ".") for part in parts):
        raise ExportError(f"{zip_path}: member {name!r}: not a canonical path (empty or '.' component): "
                          f"the file system would make it an alias of another member")
    return p


def _member_key(name: str) -> str:
    """How a case-insensitive, Unicode-normalising file system (macOS, Windows) names a member."""
    import unicodedata

    return unicodedata.normalize("NFC", name.rstrip("/")).casefold()


def _check_member_set(zip_path: Path, infos: Sequence[zipfile.ZipInfo]) -> None:
    """No two members that one file system would write to the same place (aliases, case or
    Unicode-normalisation collisions), and no member that is both a file and a folder."""
    seen: dict[str, str] = {}
    dirs: dict[str, str] = {}
    files: dict[str, str] = {}
    for info in infos:
        name = info.filename
        key = _member_key(name)
        if key in seen:
            raise ExportError(f"{zip_path}: member {name!r}: same path as member {seen[key]!r} on a "
                              f"case-insensitive file system (or an exact duplicate)")
        seen[key] = name
        (dirs if name.endswith("/") else files)[key] = name
        parts = key.split("/")
        for i in range(1, len(parts)):
            dirs.setdefault("/".join(parts[:i]), name)
    for key, name in files.items():
        if key in dirs:
            raise ExportError(f"{zip_path}: member {name!r}: is a file, but member {dirs[key]!r} needs a "
                              f"folder of that name")


def verify_zip(zip_path: str | Path) -> dict:
    """Check an export archive and return its manifest.

    Every member must have a safe relative path, not be a symlink, be listed in ``MANIFEST.json``
    with a matching size and sha256, and every listed file must be present. Raises
    :class:`ExportError` naming the archive and the first bad member.
    """
    zp = Path(zip_path)
    try:
        zf = zipfile.ZipFile(zp)
    except (zipfile.BadZipFile, OSError) as e:
        raise ExportError(f"{zp}: not a readable zip archive: {e}") from e
    with zf:
        infos = zf.infolist()
        seen = _check_member_entries(zp, infos)
        manifest, files = _read_manifest(zp, zf, seen)
        for info in infos:
            if info.filename == MANIFEST_NAME or info.filename.endswith("/"):
                continue
            _check_member_data(zp, zf, info, files)
        missing = sorted(set(files) - seen)
        if missing:
            raise ExportError(f"{zp}: member {missing[0]!r}: listed in the manifest but missing")
    return manifest


def _check_member_entries(zp: Path, infos: Sequence[zipfile.ZipInfo]) -> set[str]:
    """Safe names, no symlinks, no duplicates or file-system collisions; returns the member names."""
    seen: set[str] = set()
    for info in infos:
        _check_member_name(zp, info.filename)
        if _is_symlink_member(info):
            raise ExportError(f"{zp}: member {info.filename!r}: symlinks are refused")
        if info.filename in seen:
            raise ExportError(f"{zp}: member {info.filename!r}: duplicate entry")
        seen.add(info.filename)
    _check_member_set(zp, infos)
    return seen


def _read_manifest(zp: Path, zf: zipfile.ZipFile, names: set[str]) -> tuple[dict, dict[str, tuple[str, int]]]:
    """The archive's manifest (size-capped, this project's format) and its ``path -> (sha256, size)``."""
    if MANIFEST_NAME not in names:
        raise ExportError(f"{zp}: {MANIFEST_NAME} missing; not a dsa-cast export")
    minfo = zf.getinfo(MANIFEST_NAME)
    if minfo.file_size > MAX_MANIFEST_BYTES:
        raise ExportError(f"{zp}: member {MANIFEST_NAME!r}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = dsa_io.parse_json(zf.read(minfo), f"{zp}!{MANIFEST_NAME}")
        files = {e["path"]: (e["sha256"], int(e["size"])) for e in manifest["files"]}
    except dsa_io.InputError as e:
        raise ExportError(f"{zp}: member {MANIFEST_NAME!r}: unreadable manifest: {e.reason}"
                          + (f" (line {e.line})" if e.line else "")) from e
    except KeyError as e:
        raise ExportError(f"{zp}: member {MANIFEST_NAME!r}: unreadable manifest: missing field {e}") from e
    except (zipfile.BadZipFile, ValueError, TypeError, OverflowError, RuntimeError) as e:
        raise ExportError(f"{zp}: member {MANIFEST_NAME!r}: unreadable manifest: {e}") from e
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ExportError(f"{zp}: member {MANIFEST_NAME!r}: format {manifest.get('format')!r}, "
                          f"expected {MANIFEST_FORMAT!r}")
    return manifest, files


def _check_member_data(zp: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                       files: Mapping[str, tuple[str, int]]) -> None:
    """The member is listed in the manifest and its bytes match the listed size and sha256."""
    name = info.filename
    if name not in files:
        raise ExportError(f"{zp}: member {name!r}: not listed in the manifest")
    want_sha, want_size = files[name]
    h = hashlib.sha256()
    size = 0
    try:
        with zf.open(info) as f:
            for block in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
                h.update(block)
                size += len(block)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ExportError(f"{zp}: member {name!r}: corrupt data: {e}") from e
    if size != want_size or h.hexdigest() != want_sha:
        raise ExportError(f"{zp}: member {name!r}: sha256/size mismatch with the manifest: the "
                          f"archive is corrupt ({_TAMPER_NOTE})")


def unpack(zip_path: str | Path, target: str | Path, *, max_bytes: int = DEFAULT_MAX_UNPACK_BYTES) -> Path:
    """Verify an export archive (:func:`verify_zip`) and extract it into ``target``.

    ``target`` must not exist or be an empty directory. The members' declared sizes may total at
    most ``max_bytes`` and must fit the target's free disk space; extraction stops if a member
    yields more bytes than it declared. Extraction goes to a temporary sibling directory that is
    renamed into place only when complete, and every destination is checked to stay inside it.
    Every failure (a file error included: a name too long, a target under a file) is an
    :class:`ExportError` naming the archive, member or path. Returns the target path.
    """
    zp = Path(zip_path)
    dest = Path(target)
    try:
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ExportError(f"{dest}: unpack target exists and is not an empty directory")
        verify_zip(zp)
        with zipfile.ZipFile(zp) as zf:
            declared = sum(info.file_size for info in zf.infolist())
        if declared > max_bytes:
            raise ExportError(f"{zp}: members declare {declared} bytes in all, over the limit of {max_bytes} "
                              f"(pass --max-unpack-bytes to allow more)")
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if declared > free:
            raise ExportError(f"{zp}: members declare {declared} bytes, more than the {free} bytes free "
                              f"under {parent}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".unpacking", dir=parent))
    except OSError as e:
        raise ExportError(f"{e.filename or dest}: {e.strerror or e}") from e
    try:
        base = tmp.resolve()
        with zipfile.ZipFile(zp) as zf:
            for info in zf.infolist():
                rel = _check_member_name(zp, info.filename)
                out = (base / rel).resolve()
                if out != base and base not in out.parents:
                    raise ExportError(f"{zp}: member {info.filename!r}: escapes the target directory")
                try:
                    if info.filename.endswith("/"):
                        out.mkdir(parents=True, exist_ok=True)
                        continue
                    out.parent.mkdir(parents=True, exist_ok=True)
                    _extract_member(zp, zf, info, out)
                except OSError as e:
                    raise ExportError(f"{zp}: member {info.filename!r}: cannot write {e.filename or out}: "
                                      f"{e.strerror or e}") from e
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _extract_member(zp: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    """Copy one member to ``out`` (created, never replacing a file), stopping when it yields more
    bytes than it declared."""
    written = 0
    with zf.open(info) as src, open(out, "xb") as dst:
        for block in iter(lambda: src.read(_HASH_CHUNK_BYTES), b""):
            written += len(block)
            if written > info.file_size:
                raise ExportError(f"{zp}: member {info.filename!r}: yields more than the {info.file_size} "
                                  f"bytes it declares")
            dst.write(block)


# --------------------------------------------------------------------------------------------
# safetensors (HuggingFace Gemma3ForCausalLM layout)
# --------------------------------------------------------------------------------------------

_HF_PREFIX = "model."


def _flat_params(model) -> dict[str, Any]:
    """``{"layers.0.attn.q_einsum.w": array, ...}``: the model's nnx.Param leaves by dotted path,
    the same keys Tunix's safetensors loader builds (``path_to_key``)."""
    import jax
    from flax import nnx

    pure = nnx.state(model, nnx.Param).to_pure_dict()
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(pure)[0]:
        key = ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        flat[key] = leaf
    return flat


def hf_state_dict(model) -> dict[str, Any]:
    """The model's parameters as numpy arrays under HuggingFace ``Gemma3ForCausalLM`` names.

    Inverse of ``tunix.models.gemma3.params_safetensors``: q/k/v come back out of ``q_einsum`` +
    ``kv_einsum`` (or the fused ``qkv_einsum`` when ``num_heads == num_kv_heads``) as torch
    ``(out, in)`` matrices; ``o_proj`` and the MLP kernels are transposed back; norms and the
    (tied) embedding are copied. Raises :class:`ExportError` on any parameter it cannot map
    (e.g. a vision tower), so nothing is silently dropped.
    """
    import numpy as np

    cfg = model.config
    if getattr(cfg, "vision_config", None) is not None:
        raise ExportError("safetensors export supports text-only Gemma 3 (vision_config is set)")
    d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    if d in (n, k):
        # Tunix's loader recognises q/k/v layouts by shape; with embed_dim equal to a head count
        # the (D, N, H) and (N, D, H) layouts coincide and the reload would be ambiguous.
        raise ExportError(f"embed_dim={d} equals a head count (num_heads={n}, num_kv_heads={k}); "
                          "Tunix's safetensors loader cannot tell the q/k/v layouts apart")

    flat = {key: np.asarray(v) for key, v in _flat_params(model).items()}
    used: set[str] = set()
    out: dict[str, Any] = {
        _HF_PREFIX + "embed_tokens.weight": np.ascontiguousarray(_take(flat, used, "embedder.input_embedding")),
        _HF_PREFIX + "norm.weight": np.ascontiguousarray(_take(flat, used, "final_norm.scale")),
    }
    for i in range(cfg.num_layers):
        out.update(_hf_layer(flat, used, i, d=d, n=n, k=k, h=h))
    unmapped = sorted(set(flat) - used)
    if unmapped:
        raise ExportError(f"safetensors export: no HuggingFace name for parameter(s) {unmapped[:5]}")
    return out


def _take(flat: Mapping[str, Any], used: set[str], key: str) -> Any:
    """``flat[key]``, recording that the parameter has been mapped."""
    used.add(key)
    return flat[key]


def _hf_layer(flat: Mapping[str, Any], used: set[str], i: int, *, d: int, n: int, k: int, h: int) -> dict[str, Any]:
    """Decoder layer ``i`` under HF names: q/k/v/o projections, q/k norms, MLP and the four norms."""
    import numpy as np

    def proj_from_ndh(w, heads):  # (heads, D, H) -> torch (heads*H, D)
        w = np.asarray(w)
        return np.ascontiguousarray(w.transpose(1, 0, 2).reshape(d, heads * h).T)

    def take(key):
        return _take(flat, used, key)

    src = f"layers.{i}."
    dst = f"{_HF_PREFIX}layers.{i}."
    out: dict[str, Any] = {}
    if src + "attn.qkv_einsum.w" in flat:
        qkv = take(src + "attn.qkv_einsum.w")  # (3, N, D, H)
        q, kk, v = qkv[0], qkv[1], qkv[2]
        kv_heads = n
    else:
        q = take(src + "attn.q_einsum.w")  # (N, D, H)
        kv = take(src + "attn.kv_einsum.w")  # (2, K, D, H)
        kk, v = kv[0], kv[1]
        kv_heads = k
    out[dst + "self_attn.q_proj.weight"] = proj_from_ndh(q, n)
    out[dst + "self_attn.k_proj.weight"] = proj_from_ndh(kk, kv_heads)
    out[dst + "self_attn.v_proj.weight"] = proj_from_ndh(v, kv_heads)
    o = take(src + "attn.attn_vec_einsum.w")  # (N, H, D) -> torch (D, N*H)
    out[dst + "self_attn.o_proj.weight"] = np.ascontiguousarray(o.reshape(n * h, d).T)
    out[dst + "self_attn.q_norm.weight"] = np.ascontiguousarray(take(src + "attn._query_norm.scale"))
    out[dst + "self_attn.k_norm.weight"] = np.ascontiguousarray(take(src + "attn._key_norm.scale"))
    for proj in ("gate_proj", "up_proj", "down_proj"):
        out[dst + f"mlp.{proj}.weight"] = np.ascontiguousarray(take(src + f"mlp.{proj}.kernel").T)
    for ours, theirs in (("pre_attention_norm", "input_layernorm"),
                         ("post_attention_norm", "post_attention_layernorm"),
                         ("pre_ffw_norm", "pre_feedforward_layernorm"),
                         ("post_ffw_norm", "post_feedforward_layernorm")):
        out[dst + f"{theirs}.weight"] = np.ascontiguousarray(take(src + f"{ours}.scale"))
    return out


def hf_config(model_config, *, bos_id: int = 2, eos_ids: Sequence[int] = (1,), pad_id: int = 0,
              dtype: str = "float32", max_position_embeddings: int = 32768) -> dict[str, Any]:
    """A ``config.json`` for HuggingFace ``Gemma3ForCausalLM`` (``model_type: gemma3_text``)
    matching a Tunix Gemma 3 ``ModelConfig``. ``max_position_embeddings`` is not part of the
    Tunix config (RoPE has no table); 32768 is Gemma 3 1B's published context length."""
    from tunix.models.gemma3 import model as gemma3_lib

    c = model_config
    q_norm = c.query_pre_attn_norm
    Q = gemma3_lib.QueryPreAttentionNormalisation
    if q_norm == Q.BY_ONE_OVER_SQRT_HEAD_DIM:
        scalar = c.head_dim
    elif q_norm == Q.BY_EMBED_DIM_DIV_NUM_HEADS:
        scalar = c.embed_dim // c.num_heads
    else:
        scalar = c.embed_dim // c.num_heads  # BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
    pattern = list(gemma3_lib.GEMMA3_ATTENTION_PATTERN)
    layer_types = [
        "sliding_attention" if pattern[i % len(pattern)] == gemma3_lib.AttentionType.LOCAL_SLIDING
        else "full_attention" for i in range(c.num_layers)
    ]
    rope_scaling = None
    if c.global_scale_factor != 1.0:
        rope_scaling = {"rope_type": "linear", "factor": float(c.global_scale_factor)}
    eos = list(eos_ids)
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": c.num_embed,
        "hidden_size": c.embed_dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "query_pre_attn_scalar": scalar,
        "sliding_window": c.sliding_window_size,
        "sliding_window_pattern": len(pattern),
        "layer_types": layer_types,
        "rope_theta": float(c.global_base_frequency),
        "rope_local_base_freq": float(c.local_base_frequency),
        "rope_scaling": rope_scaling,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos if len(eos) > 1 else eos[0],
        "pad_token_id": pad_id,
        "torch_dtype": dtype,
        "use_cache": True,
    }


def _tokenizer_bytes(tokenizer) -> bytes | None:
    """Serialized SentencePiece model of ``tokenizer`` (raw processor or a wrapper), if any."""
    for obj in (tokenizer, getattr(tokenizer, "tokenizer", None), getattr(tokenizer, "_tokenizer", None)):
        fn = getattr(obj, "serialized_model_proto", None)
        if callable(fn):
            return bytes(fn())
    return None


def export_safetensors(
    model,
    out_dir: str | Path,
    *,
    tokenizer=None,
    tokenizer_path: str | Path | None = None,
    dtype: str | None = None,
    eos_ids: Sequence[int] = (1,),
    pad_id: int = 0,
    bos_id: int = 2,
    verify: bool = True,
    overwrite: bool = False,
) -> SafetensorsExport:
    """Write ``model`` as a HuggingFace ``Gemma3ForCausalLM`` directory.

    The directory gets ``model.safetensors`` (one file, one dtype: ``dtype`` or the parameters'
    own), ``config.json`` (:func:`hf_config`) and, when a tokenizer is known (``tokenizer_path``,
    or a SentencePiece ``tokenizer`` serialised), ``tokenizer.model`` plus the HF tokenizer and
    generation files (:func:`dsa_cast_train.hf_tokenizer.write_hf_tokenizer_files`: BOS added,
    chat markers special, the project's chat template, stop ids ``eos_ids``); a tokenizer those
    files cannot mirror (not a SentencePiece BPE with identity normalisation) raises
    :class:`ExportError` before anything is written. The directory is
    given the mode a plain ``mkdir`` gives (0777 less the umask), not ``mkdtemp``'s 0700. With ``verify`` the
    directory is reloaded through ``tunix.models.gemma3.params_safetensors.
    create_model_from_safe_tensors`` and every parameter compared for exact equality before the
    directory is renamed into place.
    """
    import numpy as np
    import safetensors.numpy as st_np

    out = Path(out_dir)
    _check_replaceable(out, overwrite)
    tensors = hf_state_dict(model)
    np_dtype = _np_dtype(dtype) if dtype else next(iter(tensors.values())).dtype
    tensors = {k: v.astype(np_dtype, copy=False) for k, v in tensors.items()}
    dtype_name = _dtype_name(np_dtype)
    cfg = hf_config(model.config, bos_id=bos_id, eos_ids=eos_ids, pad_id=pad_id, dtype=dtype_name)
    tok_files = _hf_tokenizer_files(tokenizer, tokenizer_path, eos_ids, cfg["max_position_embeddings"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        st_np.save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        for name, data in tok_files.items():
            (tmp / name).write_bytes(data)
        _chmod_like_mkdir(tmp)
        if verify:
            _verify_reload(model, tmp, np_dtype)
        _mark_ours(tmp)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_params = int(sum(int(np.prod(v.shape)) for v in tensors.values()))
    return SafetensorsExport(out, len(tensors), n_params, dtype_name, verify)


def _hf_tokenizer_files(tokenizer, tokenizer_path: str | Path | None, eos_ids: Sequence[int],
                        model_max_length: int) -> dict[str, bytes]:
    """``tokenizer.model`` and the HF tokenizer/generation files for the SentencePiece model at
    ``tokenizer_path`` (else serialised from ``tokenizer``); none when neither gives one."""
    tok = None
    if tokenizer_path is not None:
        tok = Path(tokenizer_path).read_bytes()
    elif tokenizer is not None:
        tok = _tokenizer_bytes(tokenizer)
    if tok is None:
        return {}
    from dsa_cast_train import hf_tokenizer

    try:
        return hf_tokenizer.tokenizer_files(tok, eos_ids=eos_ids, model_max_length=model_max_length)
    except ValueError as e:
        raise ExportError(f"{tokenizer_path or 'tokenizer'}: no HF tokenizer files can be built: {e}") from e


def _ours(directory: Path) -> set[str] | None:
    """The files our marker says this project wrote in ``directory``; None when unmarked."""
    try:
        data = dsa_io.load_json(directory / HF_MARKER)
        files = data["files"]
    except (dsa_io.InputError, KeyError, TypeError):
        return None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else None


def _foreign_files(directory: Path) -> list[str]:
    """What ``directory`` holds that this project did not write there (everything when unmarked)."""
    ours = _ours(directory)
    found = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() or p.is_symlink())
    return [f for f in found if ours is None or (f not in ours and f != HF_MARKER)]


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Refuse an output directory holding anything this project did not write (user files are
    never deleted); a non-empty one of ours needs ``overwrite``."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    foreign = _foreign_files(out)
    if foreign:
        raise ExportError(f"{out}: holds files dsa-cast did not write ({', '.join(foreign[:5])}"
                          f"{', ...' if len(foreign) > 5 else ''}); refusing to replace it: move them away "
                          f"or choose another directory")
    if not overwrite:
        raise ExportError(f"{out}: exists and is not empty (pass overwrite=True / --overwrite)")


def _mark_ours(directory: Path) -> None:
    files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
    dsa_io.atomic_write_json(directory / HF_MARKER, {"format": "dsa-cast-hf-export/1", "files": files})


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``out``; an existing ``out`` (checked replaceable just before)
    is moved aside first and removed only once the new directory is in place."""
    _check_replaceable(out, overwrite)  # again: the check before writing was minutes ago
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / out.name, out)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _chmod_like_mkdir(path: Path) -> None:
    """``mkdtemp`` makes a private (0700) directory; give it the mode a plain ``mkdir`` gets
    (0777 less the umask), read from a probe subdirectory (no process-wide umask change)."""
    probe = path / ".mode-probe"
    probe.mkdir()
    mode = probe.stat().st_mode & 0o777
    probe.rmdir()
    path.chmod(mode)


def _np_dtype(name: str):
    import ml_dtypes
    import numpy as np

    table = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
    if name not in table:
        raise ExportError(f"dtype {name!r} not supported; choose one of {sorted(table)}")
    return np.dtype(table[name])


def _dtype_name(dt) -> str:
    import numpy as np

    return {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}.get(np.dtype(dt).name,
                                                                                     np.dtype(dt).name)


def load_safetensors_model(directory: str | Path, model_config, *, mesh=None):
    """Reload an exported directory through Tunix's own loader, in its default mode (the
    memory-mapped ``"optimized"`` path outside Google's internal environment)."""
    from tunix.models.gemma3 import params_safetensors

    return params_safetensors.create_model_from_safe_tensors(str(directory), model_config, mesh=mesh)


def _verify_reload(model, directory: Path, np_dtype) -> None:
    import numpy as np

    reloaded = load_safetensors_model(directory, model.config)
    want = _flat_params(model)
    got = _flat_params(reloaded)
    if set(want) != set(got):
        raise ExportError(f"{directory}: reloaded parameter names differ: {sorted(set(want) ^ set(got))[:5]}")
    for key, w in want.items():
        a = np.asarray(w).astype(np_dtype)
        b = np.asarray(got[key])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise ExportError(f"{directory}: parameter {key} differs after reload through Tunix")


# --------------------------------------------------------------------------------------------
# stage entry point and CLI
# --------------------------------------------------------------------------------------------


def run(config, run_dir: str | Path) -> ExportResult:
    """Export a run directory as configured by ``config.export`` (:class:`~dsa_cast_train.config.ExportConfig`).

    ``export.format`` picks the zip (``zip``), the HuggingFace directory (``safetensors``) or both.
    The checkpoint root is ``export.checkpoint`` or the one detected in ``run_dir``
    (:data:`CHECKPOINT_LAYOUTS`); the step is ``export.step`` or the newest. Outputs go to
    ``export.output`` (default ``run_dir/export``): ``<run>_step<N>.zip`` and ``hf/``. For the
    safetensors directory the step is restored into the configured model (``config.model``) and
    written in ``config.model.dtype``. ``export.remove_checkpoints`` deletes the checkpoint tree
    once the zip is written and verified (the notebook's space saver).
    """
    run_path = Path(run_dir)
    exp = config.export
    root = resolve_checkpoint_root(run_path, exp.checkpoint)
    step = _pick_step(root, exp.step)
    out_dir = Path(exp.output) if exp.output else run_path / "export"
    zexp = sexp = None
    if exp.format in ("safetensors", "both"):
        from dsa_cast_train import models

        _check_replaceable(out_dir / "hf", overwrite=True)  # before minutes of work
        loaded = models.load(config.model)
        try:
            models.restore_params(loaded.model, root, step)
        except digests.CheckpointError as exc:
            raise ExportError(str(exc)) from exc
        sexp = export_safetensors(
            loaded.model, out_dir / "hf", tokenizer=loaded.tokenizer,
            tokenizer_path=_tokenizer_path(config.model), dtype=config.model.dtype,
            eos_ids=loaded.eos_ids, pad_id=loaded.pad_id, verify=True, overwrite=True,
        )
        log.info("safetensors: %s (%d tensors, %d parameters)", sexp.directory, sexp.tensors, sexp.parameters)
    if exp.format in ("zip", "both"):
        zexp = export_zip(run_path, out_dir / f"{run_path.resolve().name}_step{step}.zip", step=step,
                          checkpoint_root=root, config=_config_to_dict(config))
        if exp.remove_checkpoints:
            removed = _remove_steps(root)
            log.info("removed checkpoint step(s) %s of %s after a verified zip", removed, root)
    return ExportResult(zexp, sexp)


def _remove_steps(root: Path) -> list[int]:
    """Delete the orbax step directories under ``root`` (and ``root`` if that leaves it empty);
    anything else there is left alone."""
    steps = checkpoint_steps(root)
    for step in steps:
        shutil.rmtree(root / str(step))
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    return steps


def _tokenizer_path(spec) -> Path | None:
    path = getattr(spec, "path", None)
    if path and (Path(path) / "tokenizer.model").is_file():
        return Path(path) / "tokenizer.model"
    return None


def _config_to_dict(config) -> dict | None:
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        from dsa_cast_train import config as config_lib

        return config_lib.to_dict(config)
    if isinstance(config, Mapping):
        return dict(config)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dsa_cast_train.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="run directory holding checkpoints and the resolved config (required "
                                      "unless --unpack)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest finished step)")
    p.add_argument("--checkpoint-root", default=None, help="checkpoint root (default: detected in the run dir)")
    p.add_argument("--out", default=None, help="zip path (default: RUN/export/<run>_step<N>.zip)")
    p.add_argument("--params-only", action="store_true", help="leave optimizer_state out of the zip")
    p.add_argument("--safetensors", default=None, metavar="DIR",
                   help="also write a HuggingFace safetensors directory (needs the run's config)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                   help="safetensors dtype (default: the parameters' own)")
    p.add_argument("--no-verify", action="store_true", help="skip the reload-through-Tunix check")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file that is not an export archive, and an existing "
                        "safetensors directory written by dsa-cast (one holding other files is never replaced)")
    p.add_argument("--unpack", nargs=2, metavar=("ZIP", "TARGET"), help="verify and unpack an archive, then exit")
    p.add_argument("--max-unpack-bytes", type=int, default=DEFAULT_MAX_UNPACK_BYTES,
                   help=f"--unpack refuses archives declaring more bytes in all (default {DEFAULT_MAX_UNPACK_BYTES})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.unpack and not args.run_dir:
        parser.error("--run-dir is required (unless --unpack ZIP TARGET)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dsa_cast_train").setLevel(logging.INFO)
    try:
        if args.unpack:
            dest = unpack(*args.unpack, max_bytes=args.max_unpack_bytes)
            print(f"unpacked {args.unpack[0]} -> {dest}")
            return 0
        run_path = Path(args.run_dir)
        with _locked_if_ours(run_path):
            return _export_command(args, run_path)
    except (ExportError, digests.CheckpointError, dsa_io.InputError, dsa_io.OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file error not anticipated above: still one line, naming the path
        print(f"error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - RunDirError (a run in progress) and ConfigError
        from dsa_cast_train import config as config_lib
        from dsa_cast_train import runs

        if isinstance(e, (runs.RunDirError, config_lib.ConfigError)):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


@contextlib.contextmanager
def _locked_if_ours(run_path: Path) -> Iterator[None]:
    """Hold the run directory's lock while exporting it (a trainer still writing it is refused),
    when it is one of our run directories; a plain directory gets no lock file."""
    from dsa_cast_train import runs

    if not (run_path / runs.MARKER).is_file():
        yield
        return
    lock = runs.RunLock(run_path, "export")
    try:
        yield
    finally:
        lock.release()


def _export_command(args: argparse.Namespace, run_path: Path) -> int:
    config = _load_run_config(run_path)
    zexp = export_zip(run_path, args.out, step=args.step, checkpoint_root=args.checkpoint_root,
                      include_optimizer=not args.params_only, config=_config_to_dict(config),
                      overwrite=args.overwrite)
    print(f"zip: {zexp.path} (step {zexp.step}, {zexp.files} files, {zexp.bytes} bytes, sha256 {zexp.sha256})")
    if args.safetensors:
        if config is None:
            raise ExportError(f"{run_path}: no resolved config found; cannot build the model to export")
        from dsa_cast_train import models

        _check_replaceable(Path(args.safetensors), args.overwrite)  # before minutes of work
        loaded = models.load(config.model)
        models.restore_params(loaded.model, resolve_checkpoint_root(run_path, args.checkpoint_root), zexp.step)
        sexp = export_safetensors(loaded.model, args.safetensors, tokenizer=loaded.tokenizer,
                                  tokenizer_path=_tokenizer_path(config.model), dtype=args.dtype,
                                  eos_ids=loaded.eos_ids, pad_id=loaded.pad_id,
                                  verify=not args.no_verify, overwrite=args.overwrite)
        print(f"safetensors: {sexp.directory} ({sexp.tensors} tensors, {sexp.parameters} parameters, "
              f"{sexp.dtype}, verified={sexp.verified})")
    return 0


def _load_run_config(run_dir: Path):
    """The run's resolved config (``<run_dir>/config.json``, as written by
    :mod:`dsa_cast_train.runs`), or None if the directory has none."""
    from dsa_cast_train import config as config_lib

    path = run_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return config_lib.from_dict(dsa_io.load_json(path))
    except (dsa_io.InputError, config_lib.ConfigError) as e:
        raise ExportError(f"{path}: not a usable resolved config: {e}") from e


if __name__ == "__main__":
    raise SystemExit(main())
