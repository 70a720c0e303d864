"""Small JSON files that spare a run work an earlier run already did (folder listings, header checks,
shard sample counts): CACHE/index/KIND-<hash of KEY>.json, CACHE being $SELFSUP_CACHE or ~/.cache/selfsup.

A cache is an optimisation only: a missing, unreadable or corrupt file reads as None (the work is
redone and the file rewritten), and a file that cannot be written is a logged warning, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "SELFSUP_CACHE"
VERSION = 1  # bump when what a cache file holds changes meaning: older files are then ignored
# A folder or file changed this recently may change again within the same timestamp tick, unseen by a
# comparison of mtimes (coarse on many file systems): such an mtime is not trusted.
SETTLED_NS = 2_000_000_000
_warned: set[str] = set()


def cache_root() -> Path:
    """$SELFSUP_CACHE, or ~/.cache/selfsup."""
    return Path(os.environ.get(CACHE_ENV) or Path("~", ".cache", "selfsup")).expanduser()


def cache_file(kind: str, key: str) -> Path:
    """The cache file of `kind` ('folder', 'shards') for `key` (e.g. a folder's real path)."""
    return cache_root() / "index" / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """What write_cache(path, key, ...) wrote, or None if the file is missing, unreadable, corrupt, of
    another VERSION or written for another key."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("key") != key:
        return None
    return data


def write_cache(path: Path, key: str, data: dict[str, Any]) -> None:
    """Write `data` (JSON-able) for `key` atomically (temp file + rename): readers see the old file or the
    new one, never half of it, even with several processes (DDP ranks) writing at once."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": VERSION, "key": key, **data}, f, separators=(",", ":"))
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as e:
        if str(path.parent) not in _warned:  # once per folder and process, not once per file
            _warned.add(str(path.parent))
            log.warning("cannot write the cache file %s (%s); the next run will redo the work it saves: "
                        "set %s to a writable folder", path, e.strerror or e, CACHE_ENV)


def save_array(path: Path, array: np.ndarray, what: str) -> bool:
    """np.save(path, array) atomically (temp file + rename); False, and a logged warning naming `what` (e.g. "the
    decoded frames of x.mp4"), if it cannot be written: the next run redoes the work the file saves."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, array)
            os.replace(temp, path)
            return True
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as e:
        log.warning("cannot write %s to %s (%s): the next run redoes that work; set %s to a writable folder", what,
                    path, e.strerror or e, CACHE_ENV)
        return False


def settled(mtime_ns: int, since_ns: int) -> bool:
    """Whether an mtime read at `since_ns` (time.time_ns()) is old enough to show every later change."""
    return since_ns - mtime_ns >= SETTLED_NS


def move_into_place(temp: Path, root: Path) -> None:
    """Rename the complete folder `temp` (generated data whose manifest is written) to `root`, replacing a stale one
    there; if another process renamed its own complete folder there first, keep that one (the caller reads its
    manifest)."""
    old = temp.with_name(temp.name + ".old")
    if root.exists():
        try:
            os.rename(root, old)
        except OSError:
            pass
    try:
        os.rename(temp, root)
    except OSError:
        pass  # a folder appeared there meanwhile
    shutil.rmtree(old, ignore_errors=True)
