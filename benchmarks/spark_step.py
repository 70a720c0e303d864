"""What SparK's sparse emulation and light decoder cost: a SparK training step against a plain forward + backward
of the same convnet at the same batch (the issue's bar: at most 1.5x).

    python benchmarks/spark_step.py [THREADS]    # writes benchmarks/results/spark_step.md

Both are model-only steps (forward, backward, SGD) on one fixed batch of Fashion-MNIST images (28 px, normalised),
timed after warm-up, median of several, alternating the two so that a busy neighbour slows both alike. The plain
step is the backbone's pooled features through a linear layer to 10 outputs and a cross-entropy loss (a
supervised step of the same network); SparK's step is `training_step` (masking, sparse encoder, densify, decoder,
loss).
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from selfsup.data import open_unlabeled
from selfsup.methods import create
from selfsup.train.optim import create_optimizer
from selfsup.views import EvalTransform

HERE = Path(__file__).parent
BATCH, REPEATS = 128, 15
SETTINGS = {  # name -> the method's options (both steps run the same backbone)
    "resnet18 quarter width, CIFAR stem": dict(backbone="resnet18", small_stem=True,
                                               backbone_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16}),
    "resnet18, CIFAR stem": dict(backbone="resnet18", small_stem=True),
}


def batch() -> torch.Tensor:
    data = open_unlabeled("fashion-mnist")
    transform = EvalTransform(28, 1)
    return torch.stack([transform(data[i][0]) for i in range(BATCH)])  # (B, 1, 28, 28)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(options: dict, x: torch.Tensor) -> tuple[float, float]:
    """(median seconds of a SparK step, of a plain forward + backward) for one backbone."""
    torch.manual_seed(0)
    method = create("spark", in_chans=1, **options)
    head = torch.nn.Linear(method.backbone.num_features, 10)
    labels = torch.randint(0, 10, (BATCH,))
    spark_opt = create_optimizer(method, "sgd", 0.01, 0.0, 0.9)
    plain_opt = torch.optim.SGD([*method.backbone.parameters(), *head.parameters()], lr=0.01, momentum=0.9)

    def spark_step():
        loss = method.training_step([x])["loss"]
        spark_opt.zero_grad()
        loss.backward()
        spark_opt.step()

    def plain_step():
        loss = F.cross_entropy(head(method.backbone(x)), labels)
        plain_opt.zero_grad()
        loss.backward()
        plain_opt.step()

    spark, plain = [], []
    for i in range(REPEATS + 2):  # two warm-up rounds
        spark.append(timed(spark_step))
        plain.append(timed(plain_step))
    return statistics.median(spark[2:]), statistics.median(plain[2:])


def method_width(options: dict) -> int:
    return create("spark", in_chans=1, **options).decoder.projs[-1].out_channels


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads()
    torch.set_num_threads(threads)
    x = batch()
    rows = []
    for name, options in SETTINGS.items():
        spark, plain = measure(options, x)
        rows.append(f"| {name} | {method_width(options)} | {1000 * plain:.0f} | {1000 * spark:.0f} | "
                    f"{spark / plain:.2f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# SparK: step cost against a plain forward + backward of the same convnet", "",
        f"`python benchmarks/spark_step.py {threads}` on this project's 2-core CPU machine (other jobs on the other "
        f"core), torch threads: {threads}; Fashion-MNIST, batch {BATCH}, 28 px (a 4 x 4 mask grid at stride 8); "
        f"model-only steps (forward, backward, SGD), median of {REPEATS} after 2 warm-up rounds, the two steps "
        "alternating in one process. Plain: the backbone's pooled features -> linear -> cross-entropy. SparK: "
        "`training_step` (masks, sparse encoder with re-masking hooks and visible-only BN, densify, decoder, loss).",
        "", "| backbone | decoder width | plain ms per step | SparK ms per step | SparK / plain |",
        "|---|---|---|---|---|", *rows, "",
        "The issue's bar: SparK's step at most 1.5x the plain step.", ""])
    (HERE / "results" / "spark_step.md").write_text(text)


if __name__ == "__main__":
    main()
