"""How long `selfsup train` takes to list a big image folder and check every file's header, the first
time and again with the cached index (selfsup.data.folder_index).

    .venv/bin/python benchmarks/index_folder.py              # 200000 files, writes results/index_folder.md
    .venv/bin/python benchmarks/index_folder.py --n 1000000

The files are hard links to copies of one 4x4 PNG in nested folders of --per-folder files each (fast to make,
and each a real image to the header check). Their folders are dated an hour back, like a data set
written earlier: a folder changed in the last seconds is not trusted by the cache and walked again.
The file contents sit in the page cache, so the first pass measures the work, not a cold disk.
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from selfsup.data import cached_index, cached_scan
from selfsup.data.cache import CACHE_ENV, cache_file

HERE = Path(__file__).parent
LINKS_PER_FILE = 50_000  # ext4 allows 65000 links to a file


def make_folder(root: Path, n: int, per_folder: int) -> None:
    """n hard links to one PNG (a copy per LINKS_PER_FILE), in root/dNNN/NN/ folders of per_folder files,
    dated an hour back."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 100, 50)).save(buffer, "PNG")
    root.mkdir(parents=True)
    for start in range(0, n, per_folder):
        leaf = root / f"d{start // (per_folder * 10):03d}" / f"{start // per_folder % 10:02d}"
        leaf.mkdir(parents=True)
        for i in range(start, min(n, start + per_folder)):
            original = root / f"original-{i // LINKS_PER_FILE}.src"  # not an image extension: not indexed
            if i % LINKS_PER_FILE == 0:
                original.write_bytes(buffer.getvalue())
            os.link(original, leaf / f"{i:08d}.png")
    past = time.time() - 3600
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


def timed_pass(root: str) -> tuple[float, float, int]:
    """(seconds to list, seconds to check headers, usable files) of one index + scan, as `selfsup train` does."""
    start = time.perf_counter()
    paths = cached_index(root)
    listed = time.perf_counter()
    good, _ = cached_scan(root, paths)
    return listed - start, time.perf_counter() - listed, len(good)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="image files [200000]")
    parser.add_argument("--per-folder", type=int, default=1000, help="files per folder [1000]")
    parser.add_argument("--out", default=str(HERE / "results" / "index_folder.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfsup-index-"))
    os.environ[CACHE_ENV] = str(work / "cache")
    try:
        root = work / "images"
        start = time.perf_counter()
        make_folder(root, args.n, args.per_folder)
        made = time.perf_counter() - start
        rows = [("first run: walk + read every header, cache written", timed_pass(str(root))),
                ("second run: cache valid, no walk, no header read", timed_pass(str(root)))]
        (root / "d000" / "00" / "new.png").write_bytes((root / "original-0.src").read_bytes())
        rows.append(("after adding one file: walk again, read 1 header", timed_pass(str(root))))
        cache_size = cache_file("folder", os.path.realpath(root)).stat().st_size
    finally:
        shutil.rmtree(work)
    setting = (f"{args.n} image files (hard links to copies of one 4x4 PNG) in {-(-args.n // args.per_folder)} "
               f"folders of {args.per_folder}, made in {made:.1f}s; {os.cpu_count()} CPUs; "
               f"cache file {cache_size / 1e6:.1f} MB")
    lines = [f"`.venv/bin/python benchmarks/index_folder.py --n {args.n} --per-folder {args.per_folder}`", "", setting, "",
             "| pass | list files (s) | header check (s) | total (s) | usable files |", "|---|---|---|---|---|"]
    lines += [f"| {what} | {listed:.2f} | {scanned:.2f} | {listed + scanned:.2f} | {good} |"
              for what, (listed, scanned, good) in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout)


if __name__ == "__main__":
    main()
