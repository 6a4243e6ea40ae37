"""Checkpoints of plain arrays, verified before they are trusted.

A checkpoint is an ``.npz`` archive (``allow_pickle=False`` on both ends) holding named
arrays plus two entries:

* ``__meta__``: a JSON string describing what was being computed (the fingerprint);
* ``__sha256__``: the SHA-256 of every array's name, dtype, shape and bytes.

Writes are atomic (temporary file in the same folder, ``fsync``, ``os.replace``) with the
file's SHA-256 in the sidecar ``<name>.sha256`` (:mod:`mfsym.records.atomic`), and the
previous checkpoint is kept as ``<name>.prev.npz`` (its sidecar moves with it).
:func:`load_checkpoint` rejects a file whose bytes do not match its sidecar (checked before
numpy opens it), that is truncated, fails its array checksum or describes a different
computation, logs why, and falls back to the previous one; if neither is valid it returns
``None`` (start afresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..records.atomic import (
    ChecksumError,
    atomic_path,
    checksum_path,
    replace_checked,
    verify_file,
)

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted or belongs to another computation."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _staging_path(path: Path) -> Path:
    """Where a new checkpoint is completed before the old one is rotated to ``.prev``."""
    return path.with_name(path.name.removesuffix(".npz") + ".new.npz")


def _prev_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".npz") + ".prev.npz")


def save_checkpoint(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Atomically write ``arrays`` and ``meta`` to ``path``; keep the old file as ``.prev``."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a folder; give a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"checkpoint array {k!r} has dtype object; only plain arrays allowed")
    payload = dict(arrays)
    payload["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    payload["__sha256__"] = np.array(_digest(arrays))
    had_previous = path.exists()
    with atomic_path(_staging_path(path), suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    if had_previous:
        replace_checked(path, _prev_path(path))
    replace_checked(_staging_path(path), path)


def read_checkpoint(path, expected_meta: dict | None = None) -> dict[str, np.ndarray]:
    """Read and verify one checkpoint file; raises :class:`CheckpointError` if invalid."""
    path = Path(path)
    try:
        verify_file(path)
        with np.load(path, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except ChecksumError as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc})") from exc
    except Exception as exc:  # a damaged archive can fail in many ways inside zipfile/numpy
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc!r})") from exc
    if "__meta__" not in contents or "__sha256__" not in contents:
        raise CheckpointError(f"checkpoint {path} lacks its metadata or checksum")
    try:
        meta = json.loads(str(contents.pop("__meta__")))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata ({exc})") from exc
    stored = str(contents.pop("__sha256__"))
    if _digest(contents) != stored:
        raise CheckpointError(f"checkpoint {path} fails its SHA-256 check (corrupted)")
    if expected_meta is not None and meta != json.loads(json.dumps(expected_meta, sort_keys=True)):
        raise CheckpointError(f"checkpoint {path} belongs to a different computation")
    return contents


def load_checkpoint(
    path, expected_meta: dict | None = None,
    state_problem: Callable[[dict[str, np.ndarray]], str | None] | None = None,
) -> dict[str, np.ndarray] | None:
    """The newest valid checkpoint at ``path``, else ``None``.

    Candidates, newest first: the staging file ``.new`` (complete, but a kill came before
    it was renamed into place; it exists only in that window), ``path``, then ``.prev``.
    Valid means verified by :func:`read_checkpoint` and, with ``state_problem``, fit for
    what resumes from it: a checksum only says the file is the one written, not that what
    was written (keys, shapes, counters) belongs to this run. ``state_problem(arrays)``
    returns why not, or None; a candidate it rejects is skipped with a warning.
    """
    path = Path(path)
    for candidate in (_staging_path(path), path, _prev_path(path)):
        if not candidate.exists():
            continue
        try:
            arrays = read_checkpoint(candidate, expected_meta)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            continue
        problem = state_problem(arrays) if state_problem is not None else None
        if problem is not None:
            log.warning("skipping checkpoint %s: %s", candidate, problem)
            continue
        log.info("resuming from checkpoint %s", candidate)
        return arrays
    return None


def remove_checkpoint(path) -> None:
    """Delete a checkpoint and its ``.prev`` (after the result it protects is written)."""
    path = Path(path)
    for candidate in (path, _prev_path(path), _staging_path(path)):
        candidate.unlink(missing_ok=True)
        checksum_path(candidate).unlink(missing_ok=True)
