"""Does training on a folder of large multi-band tiles stay bounded in memory by the batch, or grow with the tiles?

    OMP_NUM_THREADS=1 python benchmarks/rs_memory.py        # K = 2, 8, 32 tiles, 512 and 2,048 of them hard-linked
    OMP_NUM_THREADS=1 python benchmarks/rs_memory.py --tiles 2 8 32 128 --keep   # keep the tile folders and runs

Writes results/rs_memory.md and .json (~25 minutes on 2 cores; ~2 GB of disk under /tmp while it runs).

Synthetic data: K tiles of 2,000 x 2,000 px, 4 bands of uint16 (smooth noise: bicubic-upsampled random fields plus
pixel noise, values ~1,000-7,000 like reflectance x 10^4), pixel-interleaved as GDAL writes multi-band GeoTIFFs, in
two variants: uncompressed strips (memory-mapped by selfsup) and deflate with the horizontal predictor (GDAL's
COMPRESS=DEFLATE PREDICTOR=2; decoded whole by selfsup, the last tile kept per process). The folders live under
--root (default a new folder in /tmp) and are deleted at the end unless --keep.

For every folder and loader setting, one short `selfsup train simclr --data DIR` in its own process at
OMP_NUM_THREADS=1 (dense.py's quarter-width ResNet-18 with the CIFAR stem, 64 px windows, batch 32, --steps steps),
and, in another process, the data side alone (`open_unlabeled`: headers + the stretch's sample; `band_meta`: the
band statistics' sample; `windows(64)`: the index of windows). Measured:
- peak RSS of the training process (VmHWM, exact) and of its DataLoader worker (VmHWM, the largest, exact), and the
  peak over time of the tree's proportional set size (the sum of Pss of the process and its workers, read from
  /proc/PID/smaps_rollup every 0.1 s, so pages a forked worker shares with its parent count once);
- the data-side process: seconds for the stretch + statistics passes, its peak RSS above its own RSS after the
  imports, and the bytes of the window index (paths, labels, sizes) that every epoch's sampler walks;
- steps/s: the trainer's own closing line (images/s over its timed steps, the first step untimed) / batch.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
import yaml
from dense import ENCODER

HERE = Path(__file__).parent
SIDE, BANDS, SIZE, BATCH = 2000, 4, 64, 32
VARIANTS = {"raw": {}, "deflate": {"compression": "zlib", "predictor": True}}
SETTINGS = {**ENCODER, "image_size": SIZE, "batch_size": BATCH, "optimizer": "adamw", "lr": 1e-3, "seed": 0,
            "proj_hidden_dim": 512, "temperature": 0.2, "checkpoint_every": 1000}
POLL_S = 0.1


def smooth_tile(seed: int) -> np.ndarray:
    """(SIDE, SIDE, BANDS) uint16: a 40 x 40 random field per band upsampled bicubically, plus N(0, 50) pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, BANDS, 40, 40), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic", align_corners=False)[0].numpy()
    pixels = fine * 6000 + 1000 + rng.normal(0, 50, fine.shape).astype(np.float32)  # (BANDS, SIDE, SIDE)
    return pixels.clip(0, 65535).astype(np.uint16).transpose(1, 2, 0)


def write_folders(root: Path, counts: list[int], distinct: int, variant: str) -> dict[int, Path]:
    """root/variant/all holds `distinct` tiles; root/variant/kK holds K hard links to them, tile i % distinct as the
    i-th (K > distinct: a large folder on little disk; the reader cannot tell a link from a file)."""
    every = root / variant / "all"
    every.mkdir(parents=True, exist_ok=True)
    for i in range(distinct):
        path = every / f"tile_{i:04d}.tif"
        if not path.exists():
            tifffile.imwrite(path, smooth_tile(i), photometric="minisblack", planarconfig="contig",
                             **VARIANTS[variant])
    folders = {}
    for k in counts:
        folders[k] = root / variant / f"k{k}"
        folders[k].mkdir(exist_ok=True)
        for i in range(k):
            link = folders[k] / f"tile_{i:04d}.tif"
            if not link.exists():
                os.link(every / f"tile_{i % distinct:04d}.tif", link)
    return folders


def status_kib(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (VmHWM: peak RSS, VmRSS: RSS now); 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(field + ":")), 0)


def pss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """pid and every process below it (DataLoader workers are forked children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def data_side(folder: str) -> dict:
    """Run in its own process (--data-side): the stretch and statistics passes, the window index and one epoch's
    sampler order, timed and sized."""
    from selfsup.data import open_unlabeled
    from selfsup.train.resume import EpochSampler

    pid = os.getpid()
    base = status_kib(pid, "VmRSS")
    start = time.perf_counter()
    images = open_unlabeled(folder)  # headers, then measure_stretch's sample (uint16 tiles)
    stretch_s = time.perf_counter() - start
    start = time.perf_counter()
    images.band_meta()
    stats_s = time.perf_counter() - start
    windows = images.windows(SIZE)
    index = windows.paths.nbytes + windows.labels.nbytes + windows.sizes.nbytes
    before = status_kib(pid, "VmRSS")
    order = iter(EpochSampler(len(windows), BATCH, 0))  # the (epoch, index) keys of one epoch, held by the loader
    sampler = status_kib(pid, "VmRSS") - before
    del order
    return {"stretch_s": stretch_s, "stats_s": stats_s, "above_imports_mib": (status_kib(pid, "VmHWM") - base) / 1024,
            "windows": len(windows), "index_mib": index / 2**20, "sampler_mib": sampler / 1024}


def run_data_side(folder: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--data-side", str(folder)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train(folder: Path, run_dir: Path, workers: int | None, steps: int) -> dict:
    """A `selfsup train simclr` process on `folder` (a fresh run in `run_dir`), its process tree polled for memory."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    config = run_dir / "benchmark.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "data": str(folder), "max_steps": steps}))
    command = [sys.executable, "-m", "selfsup.cli", "train", "simclr", "--config", str(config), "--out",
               str(run_dir), "--no-progress", "--probe-every", "0"]
    if workers is not None:
        command += ["--num-workers", str(workers)]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    peaks: dict[int, int] = {}
    polls: dict[int, int] = {}  # how many polls saw each pid
    tree_pss = 0
    main_command = b""
    while process.poll() is None:
        main_command = main_command or cmdline(process.pid)
        # the process and its forked DataLoader workers (same command line), not short-lived helpers it runs
        pids = [pid for pid in descendants(process.pid) if cmdline(pid) == main_command]
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0), status_kib(pid, "VmHWM"))
            polls[pid] = polls.get(pid, 0) + 1
        tree_pss = max(tree_pss, sum(pss_kib(pid) for pid in pids))
        time.sleep(POLL_S)
    output = process.stdout.read()
    if process.returncode != 0:
        print(output)
        raise SystemExit(f"training on {folder} failed; see the output above")
    rate = re.search(r"([\d,.]+) images/s over (\d+) timed step", output)
    # a worker lives for the run; a fork about to exec a helper has the same command line for a moment only
    workers_seen = [kib for pid, kib in peaks.items() if pid != process.pid and polls[pid] > 1]
    return {"main_mib": peaks.get(process.pid, 0) / 1024, "worker_mib": max(workers_seen, default=0) / 1024,
            "workers_seen": len(workers_seen), "tree_pss_mib": tree_pss / 1024, "run_s": time.time() - start,
            "steps_per_s": float(rate.group(1).replace(",", "")) / BATCH if rate else None,
            "summary": next((line for line in output.splitlines() if line.startswith("simclr |")), "")}


def disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


def k_cell(r: dict) -> str:
    return str(r["k"]) if r["distinct"] == r["k"] else f"{r['k']} ({r['distinct']} distinct)"


def steps_cell(r: dict) -> str:
    return "-" if r["steps_per_s"] is None else f"{r['steps_per_s']:.2f}"


def write_table(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    tiles = " ".join(map(str, args.tiles)) + (" --linked " + " ".join(map(str, args.linked))) * bool(args.linked)
    lines = [
        "# Peak memory of training on large multi-band tiles, by tile count",
        "",
        f"Command: `OMP_NUM_THREADS={threads} python benchmarks/rs_memory.py --tiles {tiles} --steps {args.steps}` "
        f"(torch {torch.__version__}, tifffile {tifffile.__version__}, {os.cpu_count()} CPU cores shared with other "
        "jobs, one run at a time). Synthetic tiles: 2,000 x 2,000 px, 4 bands of uint16 smooth noise, pixel-"
        "interleaved; raw = uncompressed strips (memory-mapped), deflate = zlib + horizontal predictor (decoded "
        f"whole). `selfsup train simclr`: quarter-width ResNet-18 (CIFAR stem), {SIZE} px windows, batch {BATCH}, "
        f"{args.steps} steps, seed 0; workers 0 is the default here (the windows are of one size, so the views are "
        "made batched in the main process), 1 is `--num-workers 1`.",
        "",
        f"K above {max(args.tiles)}: hard links to the {max(args.tiles)} distinct tiles (the reader cannot tell them "
        "from files; what grows with K is the headers, the index of windows and the sampler's order). "
        "Columns: disk = the folder's bytes (links counted as files); main / worker = peak RSS (VmHWM) of the "
        "training process and of its DataLoader worker (a forked worker's RSS also counts the parent's pages it "
        "shares); tree PSS = the peak, polled every 0.1 s, of the summed proportional set size of both "
        "(shared pages counted once); data side = a separate process doing only what the run does before training "
        "(headers and the stretch's sample; the band statistics' sample; the window index): seconds, its peak RSS "
        "above its RSS after the imports, the index's bytes and the RSS that one epoch's sampler order adds; "
        "steps/s = the trainer's images/s over its timed steps (printed as a whole number) / batch. One run per "
        "row: the timings vary with the other jobs on the machine.",
        "",
        "| K tiles | variant | disk MiB | workers | main peak RSS MiB | worker peak RSS MiB | tree peak PSS MiB | "
        "stretch + stats s | data side above imports MiB | windows (index MiB, sampler MiB) | steps/s | run s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {k_cell(r)} | {r['variant']} | {r['disk_mib']:,.0f} | {r['workers']} | {r['main_mib']:,.0f} | "
          f"{r['worker_mib']:,.0f} | {r['tree_pss_mib']:,.0f} | {r['stretch_s']:.1f} + {r['stats_s']:.1f} | "
          f"{r['above_imports_mib']:,.0f} | {r['windows']:,} ({r['index_mib']:.1f}, {r['sampler_mib']:.1f}) | "
          f"{steps_cell(r)} | {r['run_s']:.0f} |" for r in rows],
    ]
    reading = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""
    if reading:
        lines += ["", "## Reading" + reading.rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", nargs="+", type=int, default=[2, 8, 32], help="tile counts K [2 8 32]")
    parser.add_argument("--linked", nargs="*", type=int, default=[512, 2048],
                        help="larger K made of hard links to the max(--tiles) distinct tiles [512 2048]")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--workers", nargs="+", default=["default", "1"], help="loader settings [default 1]")
    parser.add_argument("--steps", type=int, default=10, help="training steps per run [10]")
    parser.add_argument("--root", default=None, help="folder for the tiles and runs [a new one in /tmp]")
    parser.add_argument("--keep", action="store_true", help="keep the tile folders and runs")
    parser.add_argument("--out", default=str(HERE / "results" / "rs_memory.md"))
    parser.add_argument("--data-side", default=None, help=argparse.SUPPRESS)  # internal: one data-side process
    args = parser.parse_args()
    if args.data_side:
        print(json.dumps(data_side(args.data_side)))
        return
    root = Path(args.root or tempfile.mkdtemp(prefix="rs_memory_"))
    rows = []
    try:
        for variant in args.variants:
            folders = write_folders(root, args.tiles + args.linked, max(args.tiles), variant)
            for k in sorted(folders):
                side = run_data_side(folders[k])
                for workers in args.workers:
                    count = None if workers == "default" else int(workers)
                    result = train(folders[k], root / "runs" / f"{variant}-k{k}-w{workers}", count, args.steps)
                    row = {"k": k, "distinct": min(k, max(args.tiles)), "variant": variant,
                           "disk_mib": disk_mib(folders[k]),
                           "workers": f"{result['workers_seen']} (default)" if count is None else workers,
                           **side, **result}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    write_table(rows, args, Path(args.out))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
