"""An image folder's index cached between runs: its file list and each file's header check, so that a
second run on a folder of a million images starts in seconds instead of walking and reading it again.

The cache holds the mtime of every folder walked. Adding, removing or renaming a file changes its
folder's mtime, so when none changed the list is still right (checking costs one stat per folder).
A file rewritten in place changes no folder: if it became undecodable, decoding finds it later
(SkipBadImages skips it); files the cache knows as bad have their header read again on every run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from .cache import cache_file, read_cache, settled, write_cache
from .folder import IMAGE_EXTENSIONS, MAX_PIXELS, scan_images, walk_images

# What decides which files are listed and which pass the header check: a cache of other rules is stale.
RULES = [list(IMAGE_EXTENSIONS), MAX_PIXELS, "tiff-headers-by-tifffile"]


def cached_index(root: str) -> list[str]:
    """index_images(root), read from the cache file when no folder under `root` changed since it was
    written; otherwise walked again (keeping the header checks of the files still there) and saved."""
    real, prefix = os.path.realpath(root), os.path.join(root, "")
    path = cache_file("folder", real)
    entry = _entry(read_cache(path, real))
    if entry is None or not _unchanged(prefix, entry["folders"]):
        start = time.time_ns()
        paths, folders = walk_images(root)
        files = [p[len(prefix):] for p in paths]
        old = dict(zip(entry["files"], entry["checks"])) if entry else {}
        # An mtime too close to the walk is stored as None, which never matches: walked again next time.
        entry = {"rules": RULES, "folders": [[f[len(prefix):], m if settled(m, start) else None] for f, m in folders],
                 "files": files, "checks": [old.get(f) for f in files]}
        write_cache(path, real, entry)
    return [prefix + f for f in entry["files"]]


def cached_scan(root: str | None, paths: Sequence[str], threads: int = 8) -> tuple[list[str], list[tuple[str, str]]]:
    """scan_images(paths) for files that cached_index(root) listed: only the headers the cache has no
    verdict on are read, and again those it found bad (they may have been fixed); the verdicts are
    saved for the next run. With root None, or no cache file, every header is read."""
    if root is None:
        return scan_images(paths, threads)
    real, prefix = os.path.realpath(root), os.path.join(root, "")
    path = cache_file("folder", real)
    entry = _entry(read_cache(path, real))
    if entry is None:
        return scan_images(paths, threads)
    position = {f: i for i, f in enumerate(entry["files"])}
    where = [position.get(str(p)[len(prefix):]) for p in paths]
    checks = entry["checks"]
    todo = [str(p) for p, i in zip(paths, where) if i is None or checks[i] is not True]
    _, bad = scan_images(todo, threads)
    reasons = dict(bad)
    for p, i in zip(paths, where):
        if i is not None and checks[i] is not True:  # read just now
            checks[i] = reasons.get(str(p), True)
    if todo:
        write_cache(path, real, entry)
    good = [str(p) for p in paths if str(p) not in reasons]
    return good, [(str(p), reasons[str(p)]) for p in paths if str(p) in reasons]


def _entry(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cache file's content if it is whole and of the current rules, else None."""
    if data is None or data.get("rules") != RULES:
        return None
    folders, files, checks = data.get("folders"), data.get("files"), data.get("checks")
    if not (isinstance(folders, list) and isinstance(files, list) and isinstance(checks, list)
            and len(files) == len(checks) and all(isinstance(f, str) for f in files)
            and all(c is True or c is None or isinstance(c, str) for c in checks)
            and all(isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) for f in folders)):
        return None
    return data


def _unchanged(prefix: str, folders: list[list]) -> bool:
    """Whether every folder walked still has the mtime it had then."""
    for rel, mtime in folders:
        try:
            if mtime is None or os.stat(prefix + rel).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True
