"""What the collapse monitors and the online probe show: SimSiam as published against SimSiam without its
stop-gradient (the ablation of Chen & He 2021, Fig. 2, which collapses), same network, data, budget and seed.

    python benchmarks/collapse_curves.py       # writes results/curves_simsiam.png, curves_simsiam_no_stop_gradient.png
                                               # and results/collapse_curves.md

Each run trains from the CLI (in this process, so that the ablation can be registered here without being a
method users can pick) with the online kNN probe and the collapse figures every 25 steps, then `selfsup plot
curves` draws its figure.
"""

import csv
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.cli import main
from selfsup.methods import METHODS, register
from selfsup.methods.simsiam import SimSiam
from selfsup.train.monitor import collapse_warning

HERE = Path(__file__).parent
STEPS, EVERY = 300, 25
NARROW = "{channels: [16, 32, 64, 128], stem_width: 16}"
COMMON = ["--data", "fashion-mnist", "--backbone", "resnet18", "--set", f"backbone_kwargs={NARROW}", "--batch-size",
          "256",
          "--max-steps", str(STEPS), "--probe-every", str(EVERY), "--set", f"monitor_every={EVERY}", "--set",
          "proj_hidden_dim=512", "--set", "proj_dim=512", "--set", "pred_hidden_dim=128", "--set", "crop_min_scale=0.4",
          "--no-progress"]


class SimSiamNoStopGradient(SimSiam):
    """SimSiam's networks and loss with the stop-gradient on z removed: L = −½[cos(p1, z2) + cos(p2, z1)]."""

    name = "simsiam-no-stop-gradient"

    def training_step(self, views, indices=None):
        z1, z2 = (self.projector(self.backbone(x)) for x in views)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return {"loss": -0.5 * (F.cosine_similarity(p1, z2).mean() + F.cosine_similarity(p2, z1).mean())}


def last_row(run: Path) -> tuple[dict, str]:
    """(the last logged probe and collapse figures, the first step at which the trainer's collapse check warned)."""
    rows = [row for path in sorted(run.glob("logs/csv/version_*/metrics.csv")) for row in csv.DictReader(path.open())]
    figures, warned = {}, "none"
    for row in rows:
        figures.update({k: v for k, v in row.items() if v and k.split("/")[0] in ("probe", "collapse")})
        if row.get("collapse/std") and warned == "none":
            logged = {k: float(row[f"collapse/{k}"]) for k in ("std", "std_x_sqrt_d", "effective_rank")}
            dim = round((logged["std_x_sqrt_d"] / logged["std"]) ** 2)
            warned = f"step {int(row['step']) + 1}" if collapse_warning("", 0, logged, dim) else "none"
    return figures, warned


def main_() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/benchmark-collapse")
    register(SimSiamNoStopGradient)
    lines = ["# Collapse monitors and the online probe: SimSiam with and without its stop-gradient", "",
             f"`python benchmarks/collapse_curves.py` on this 2-core CPU machine (torch {torch.__version__}): "
             f"fashion-mnist, quarter-width ResNet-18, batch 256, {STEPS} steps, SimSiam's defaults with CPU-sized "
             f"heads (512 / 512 / 128), crops 0.4-1; probe (kNN k=20 on 2,000 / 1,000 seeded images, real labels) "
             f"and collapse figures every {EVERY} steps. The collapse check column applies train/monitor.py's "
             "collapse_warning (the trainer's check, with the floors in that file) to the logged figures.", "",
             "| run | final probe kNN top-1 (real labels) | std of normalised embeddings | std x sqrt(D) | "
             "effective rank | first step the collapse check flags | figure |", "|---|---|---|---|---|---|---|"]
    for name in ("simsiam", SimSiamNoStopGradient.name):
        run = runs / name
        if not (run / "checkpoints" / "last.ckpt").is_file():
            assert main(["train", name, *COMMON, "--out", str(run)]) == 0
        figure = HERE / "results" / f"curves_{name.replace('-', '_')}.png"
        assert main(["plot", "curves", "--run", str(run), "--out", str(figure)]) == 0
        f, warned = last_row(run)
        lines.append(f"| {name} | {float(f['probe/knn_top1']):.4f} | {float(f['collapse/std']):.4f} | "
                     f"{float(f['collapse/std_x_sqrt_d']):.3f} | {float(f['collapse/effective_rank']):.2f} | "
                     f"{warned} | "
                     f"[{figure.name}]({figure.name}) |")
    METHODS.pop(SimSiamNoStopGradient.name)
    (HERE / "results" / "collapse_curves.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main_()
