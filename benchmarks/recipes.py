"""Small-compute recipes: every recipe tried, on Fashion-MNIST and emoji, 3 seeds, kNN and linear top-1.

    python benchmarks/recipes.py                                   # every recipe, both data sets, seeds 0 1 2
    python benchmarks/recipes.py --data fashion-mnist --recipes demo lr3e-3 --seeds 0

Each (data, recipe, seed) trains in its own `selfsup train` process and is then evaluated frozen on the data's
whole train -> test split: weighted kNN (k 200, T 0.07; k 20 on emoji, a small set) and a linear probe, next to
raw pixels and the recipe's own network at random init (seeded like the run). Results are cached per piece in
RUNS/DATA/RECIPE/seedS/result.json: an interrupted benchmark picks up where it stopped, and several processes
with disjoint --recipes can share the work. Wall times are only comparable between rows run under the same load:
the `load` column says how many training processes shared the 2 cores.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from fashion_mnist import cached, train, write_results

from selfsup.data import open_labeled
from selfsup.eval import extract_features, frozen_encoder, knn_predict
from selfsup.eval.linear import linear_probe

HERE = Path(__file__).parent
HALF = {"channels": [32, 64, 128, 256], "stem_width": 32}  # the README demo's half-width ResNet-18
DEMO = {"method": "simclr", "backbone": "resnet18", "backbone_kwargs": HALF, "optimizer": "adamw", "lr": 1e-3,
        "weight_decay": 1e-4, "temperature": 0.2, "proj_hidden_dim": 512, "crop_min_scale": 0.4,
        "jitter_strength": 0.5, "batch_size": 256, "max_steps": 600}
# Every recipe tried, in the order tried: the demo's recipe, then one change at a time from it (or from the best so
# far, which the name says). The library's recipes (selfsup.train.recipes.RECIPES) are among them by name.
TRIED: dict[str, dict] = {
    "demo": DEMO,
    "lr3e-3": {**DEMO, "lr": 3e-3},
    "tau0.1": {**DEMO, "temperature": 0.1},
    "batch128x1200": {**DEMO, "batch_size": 128, "max_steps": 1200},
    "full-width": {**DEMO, "backbone_kwargs": {}},
    "crops0.2-jitter1": {**DEMO, "crop_min_scale": 0.2, "jitter_strength": 1.0},
    # emoji's 64 px images cost ~5x a 28 px one: the same pixels in all are 120 steps at 64 px, or 460 at 32 px
    "tau0.1-size32-steps460": {**DEMO, "temperature": 0.1, "image_size": 32, "max_steps": 460},
    "tau0.1-steps120": {**DEMO, "temperature": 0.1, "max_steps": 120},
    # channels-last convolutions ran 1.6x as fast at 28 px on this CPU in a micro-benchmark (forward + backward,
    # alternating in one process): 900 steps in the time of 600
    "tau0.05": {**DEMO, "temperature": 0.05},
    "tau0.1-steps200": {**DEMO, "temperature": 0.1, "max_steps": 200},  # emoji: the 15 minutes
    "tau0.05-steps120": {**DEMO, "temperature": 0.05, "max_steps": 120},
    # on 2 idle cores the 600 steps take ~3 minutes (911 images/s): 1800 steps fill the 10 minutes
    "tau0.1-steps1800": {**DEMO, "temperature": 0.1, "max_steps": 1800},
    "tau0.1-channels-last-steps900": {**DEMO, "temperature": 0.1, "channels_last": True, "max_steps": 900},
    # emoji under the cpu recipe's rule: 1800 x (28/64)^2 steps at 64 px
    "tau0.1-steps350": {**DEMO, "temperature": 0.1, "max_steps": 350},
}
K = {"fashion-mnist": 200, "emoji": 20}
# what `selfsup train simclr` picks with no options (the cpu recipe of selfsup.train.recipes) on each set
CHOSEN = {"fashion-mnist": "tau0.1-steps1800", "emoji": "tau0.1-steps350"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["fashion-mnist", "emoji"])
    parser.add_argument("--recipes", nargs="+", default=list(TRIED), choices=list(TRIED))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--load", type=int, default=1, help="training processes sharing the machine (recorded)")
    parser.add_argument("--runs", default="runs/benchmark-recipes")
    parser.add_argument("--eval-only", action="store_true", help="assemble the table from cached pieces only")
    args = parser.parse_args()
    rows = []
    for data in args.data:
        train_set, test_set = open_labeled(data)
        root = Path(args.runs) / data
        rows.append({"data": data, **cached(root / "pixels", lambda: evaluate("pixels", train_set, test_set, K[data]))})
        for name in args.recipes:
            for seed in args.seeds:
                folder = root / name.replace(":", "-") / f"seed{seed}"
                if args.eval_only and not (folder / "result.json").is_file():
                    continue
                rows.append({"data": data, "recipe": name, **cached(folder, lambda folder=folder, name=name, seed=seed:
                             run_piece(name, data, seed, folder, train_set, test_set, args.load))})
    write_table(rows, HERE / "results" / "recipes.md")


def run_piece(name: str, data: str, seed: int, folder: Path, train_set, test_set, load: int) -> dict:
    """Train recipe `name` on `data` with `seed`, then evaluate it and its network at random init."""
    options = {k: v for k, v in TRIED[name].items() if k != "method"}
    trained = train(TRIED[name]["method"], folder, {**options, "data": data, "seed": seed, "checkpoint_every": 100})
    checkpoint = str(folder / "checkpoints" / "last.ckpt")
    result = evaluate(checkpoint, train_set, test_set, K[data])
    random = evaluate(checkpoint, train_set, test_set, K[data], random_init=True, seed=seed)
    images = options["max_steps"] * options["batch_size"]
    return {**result, "random_knn": random["knn"], "random_linear": random["linear"], **trained, "seed": seed,
            "images_per_second": round(images / max(trained["train_seconds"], 1), 1), "load": load}


def evaluate(checkpoint: str, train_set, test_set, k: int, random_init: bool = False, seed: int = 0) -> dict:
    """kNN (k, T 0.07) and linear top-1 of the frozen encoder on the whole train -> test split."""
    start = time.time()
    torch.manual_seed(seed)
    encoder = frozen_encoder(checkpoint, random_init=random_init, channels=train_set.channels,
                             native_size=train_set.native_size)
    train_x, train_y = extract_features(encoder, train_set, desc="train features")
    test_x, test_y = extract_features(encoder, test_set, desc="test features")
    knn = (knn_predict(train_x, train_y, test_x, k=k, temperature=0.07) == test_y).float().mean()
    linear = (torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy())) == test_y).float().mean()
    return {"method": checkpoint, "knn": round(float(knn), 4), "linear": round(float(linear), 4),
            "eval_seconds": round(time.time() - start)}


def spread(values: list[float]) -> str:
    """'mean ± half-range (n)' of one column over seeds."""
    if len(values) == 1:
        return f"{values[0]:.4f} (1 seed)"
    return f"{statistics.mean(values):.4f} ± {(max(values) - min(values)) / 2:.4f} ({len(values)})"


def write_table(rows: list[dict], out: Path) -> None:
    lines = ["# Small-compute recipes", "",
             "Command: `python benchmarks/recipes.py` on this 2-core CPU machine "
             f"(torch {torch.__version__}). Frozen evaluation on each set's whole train -> test split: weighted kNN "
             f"(T 0.07; k {K['fashion-mnist']} on Fashion-MNIST, {K['emoji']} on emoji) and a linear probe. "
             "Each cell: mean ± half the range over seeds (number of seeds). 'random init' is the recipe's own "
             "network with fresh weights, seeded like the run. Labels: real (Fashion-MNIST classes, emoji "
             "categories).", "",
             "| data | recipe | kNN top-1 | linear top-1 | random-init kNN | random-init linear | train s | images/s "
             "| load | settings |", "|---|---|---|---|---|---|---|---|---|---|"]
    pieces: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if "recipe" not in r:
            lines.append(f"| {r.get('data', '')} | raw pixels | {r['knn']:.4f} | {r['linear']:.4f} | | | | | | |")
            continue
        pieces.setdefault((r["data"], r["recipe"]), []).append(r)
    for (data, name), runs in pieces.items():
        col = {key: spread([r[key] for r in runs]) for key in ("knn", "linear", "random_knn", "random_linear")}
        settings = ", ".join(f"{k} {v}" for k, v in TRIED[name].items())
        mark = " **(chosen)**" if CHOSEN.get(data) == name else ""
        lines.append(f"| {data} | {name}{mark} | {col['knn']} | {col['linear']} | {col['random_knn']} | "
                     f"{col['random_linear']} | {statistics.mean(r['train_seconds'] for r in runs):.0f} | "
                     f"{statistics.mean(r['images_per_second'] for r in runs):.0f} | "
                     f"{max(r['load'] for r in runs)} | {settings} |")
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
