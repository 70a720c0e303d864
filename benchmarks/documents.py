"""Documents: DiT, its pixel-target ablation `dit-pixel`, MAE and random init at one budget on grey 224 px pages;
which-manual provenance on doc-pages (real labels) and genre on doc-genres (synthetic labels), frozen features.

    python benchmarks/documents.py                  # writes results/documents.md (+ .json, documents_tokenizer.png)
    python benchmarks/documents.py --steps 50       # a quicker (noisier) table

Every row pretrains on the 830 training pages of doc-pages (9 Debian manuals; labels unused) with the same budget
(SHARED); DiT's targets come from a page tokenizer trained here first (TOKENIZER). Two tokenizers are trained, alike
but for the encoder: "patch" (each code a function of its own 16 px patch, selfsup's default) and "conv" (the
whole-page encoder DiT's and the VQ-VAE paper's convolutions have); `dit` uses the first, `dit-conv-tokenizer` the
second. Finished pieces are cached in RUNS/NAME/result.json: run the same command again after an interruption.
"""

import argparse
import csv
import math
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from fashion_mnist import cached, settings_text, train, write_results

from selfsup.checkpoints import load_method
from selfsup.data import open_labeled
from selfsup.document import code_statistics, load_tokenizer, page_codes, train_tokenizer
from selfsup.document.train import to_input
from selfsup.eval import extract_features, frozen_encoder, knn_predict
from selfsup.eval.linear import linear_probe

HERE = Path(__file__).parent
SHARED = {"data": "doc-pages", "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
          "warmup_fraction": 0.05, "seed": 0, "checkpoint_every": 50, "probe_every": 0}
# dit's default BEiT (4 x 192, 3 heads, MLP 768, 16 px patches on 224 px pages), and MAE's timm ViT of the same size
BEIT = {"hidden": 192, "layers": 4, "heads": 3, "intermediate": 768}
VIT = {"backbone": "timm:vit_tiny_patch16_224",
       "backbone_kwargs": {"img_size": 224, "patch_size": 16, "depth": 4, "embed_dim": 192, "num_heads": 3,
                           "mlp_ratio": 4.0, "global_pool": "avg"}}
TOKENIZER = {"data": "doc-pages", "max_steps": 1000, "batch_size": 16, "lr": 1e-3, "seed": 0}
TOKENIZERS = ("patch", "conv")
# row -> (method, settings beyond SHARED); "random" is dit's BEiT with fresh weights
ROWS: dict[str, tuple[str, dict]] = {
    "random": ("random", {}),
    "dit": ("dit", {**BEIT, "tokenizer": "patch"}),
    "dit-conv-tokenizer": ("dit", {**BEIT, "tokenizer": "conv"}),
    "dit-pixel": ("dit-pixel", {**BEIT, "patch": 16}),
    "mae": ("mae", {**VIT, "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4}),
}
K = 20  # kNN neighbours: ~100 training pages per class on doc-pages, 80 on doc-genres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="pretraining steps per row [250: 9.6 epochs]")
    parser.add_argument("--runs", default="runs/benchmark-documents")
    parser.add_argument("--out", default=str(HERE / "results" / "documents.md"))
    args = parser.parse_args()
    runs, out = Path(args.runs), Path(args.out)
    tokenizers = {kind: cached(runs / f"tokenizer-{kind}", partial(
        tokenizer_summary, runs / f"tokenizer-{kind}", kind)) for kind in TOKENIZERS}
    sets = {"provenance": open_labeled("doc-pages"), "genre": open_labeled("doc-genres")}
    rows = []
    for name, (method, settings) in ROWS.items():
        if method == "random":
            continue
        options = {**SHARED, **settings, "max_steps": args.steps}
        if method == "dit":
            options["tokenizer"] = tokenizers[settings["tokenizer"]]["checkpoint"]
        rows.append(cached(runs / name, partial(train_and_evaluate, name, method, runs / name, options, settings,
                                                sets)))
    dit_checkpoint = str(runs / "dit" / "checkpoints" / "last.ckpt")
    rows.insert(0, cached(runs / "random", partial(probes, dit_checkpoint, sets, "random", random_init=True)))
    figure(tokenizers, sets["provenance"][1], out.with_name("documents_tokenizer.png"))
    write_table(rows, tokenizers, args.steps, out)


def tokenizer_summary(folder: Path, encoder: str) -> dict:
    """Train the page tokenizer (TOKENIZER, encoder `encoder`); its summary plus the code statistics of the test
    pages (the DiT probes' held-out pages)."""
    summary = train_tokenizer(out=folder, encoder=encoder, progress=False, **TOKENIZER)
    test = open_labeled("doc-pages")[1]
    test_codes = page_codes(summary["checkpoint"], test, progress=False)
    return {**summary, "test": code_statistics(test_codes, test.images)}


def train_and_evaluate(name: str, method: str, folder: Path, options: dict, settings: dict, sets: dict) -> dict:
    trained = train(method, folder, options)
    checkpoint = str(folder / "checkpoints" / "last.ckpt")
    result = {**probes(checkpoint, sets, name), **trained, **final_metrics(folder), "settings": settings}
    if method == "dit":
        result["masked_tokens"] = masked_token_scores(checkpoint, options["tokenizer"], sets["provenance"])
    return result


def probes(checkpoint: str, sets: dict, name: str, random_init: bool = False) -> dict:
    """Frozen features of the encoder (random_init: the checkpoint's network with fresh weights) on each labelled
    set: weighted kNN (K, T 0.07) and a linear probe (logistic regression), top-1 on the test split."""
    torch.manual_seed(0)
    encoder = frozen_encoder(checkpoint, random_init=random_init)
    result: dict = {"method": name}
    for task, (train_set, test_set) in sets.items():
        train_x, train_y = extract_features(encoder, train_set, desc=f"{task} train features")
        test_x, test_y = extract_features(encoder, test_set, desc=f"{task} test features")
        knn = (knn_predict(train_x, train_y, test_x, k=K, temperature=0.07) == test_y).float().mean()
        linear = (torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy())) == test_y)
        result[task] = {"knn": round(float(knn), 4), "linear": round(float(linear.float().mean()), 4),
                        "n_test": len(test_y)}
    return result


def final_metrics(folder: Path, last: int = 5) -> dict:
    """Mean of the last `last` logged values of the training loss (and dit's masked-token accuracy)."""
    with open(next((folder / "logs" / "csv").rglob("metrics.csv")), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    out = {"final_loss": round(float(np.mean([float(r["loss"]) for r in rows[-last:]])), 4)}
    if rows and rows[-1].get("accuracy"):
        out["final_train_accuracy"] = round(float(np.mean([float(r["accuracy"]) for r in rows[-last:]])), 4)
    return out


@torch.no_grad()
def masked_token_scores(checkpoint: str, tokenizer: str, provenance) -> dict:
    """dit's masked-token prediction on the held-out doc-pages test pages (BEiT masks seeded with 0): cross-entropy
    and accuracy over all masked patches and over the masked patches that are not blank, next to what the code
    frequencies of the training pages alone give (their entropy; the cross-entropy of predicting those frequencies
    for every masked patch, and the accuracy of always answering the most frequent code)."""
    method, _ = load_method(checkpoint)
    train_set, test_set = provenance
    train_codes = page_codes(tokenizer, train_set, progress=False).flatten()
    test_codes = page_codes(tokenizer, test_set, progress=False)  # (N, h, w)
    views = method.default_views(224, 1)
    torch.manual_seed(0)
    batch = [views((page, codes)) for page, codes in zip(test_set.images, test_codes)]
    x, mask, codes = (torch.stack(t) for t in zip(*batch))  # (N, 1, S, S), (N, n) bool, (N, n)
    logits = torch.cat([method.predict_masked(x[i:i + 32], mask[i:i + 32]) for i in range(0, len(x), 32)])  # (M, K)
    target = codes[mask]
    tiles = test_set.images.unfold(2, 16, 16).unfold(3, 16, 16).flatten(-2)[:, 0]  # (N, h, w, 256)
    blank = (tiles == tiles[..., :1]).all(-1).flatten(1)[mask]  # (M,)
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    right = logits.argmax(1) == target
    counts = torch.bincount(train_codes, minlength=logits.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    return {"loss": round(float(ce.mean()), 4), "accuracy": round(float(right.float().mean()), 4),
            "accuracy_not_blank": round(float(right[~blank].float().mean()), 4),
            "loss_not_blank": round(float(ce[~blank].mean()), 4), "masked": len(target),
            "blank_share_masked": round(float(blank.float().mean()), 4),
            "frequency_entropy": round(float(-(p * p.log()).sum()), 4),
            "frequency_loss": round(float(-(counts[target] / counts.sum()).clamp_min(1e-12).log().mean()), 4),
            "most_frequent_accuracy": round(float((target == counts.argmax()).float().mean()), 4)}


def figure(tokenizers: dict, test_set, path: Path, n: int = 6) -> None:
    """Rows: held-out pages, the patch tokenizer's and the conv tokenizer's reconstructions from their codes; then a
    3x zoom of each page's upper-left 96 px (text at full resolution)."""
    if path.is_file():
        return
    pick = torch.randperm(len(test_set), generator=torch.Generator().manual_seed(0))[:n].sort().values
    pages = test_set.images[pick]  # (n, 1, 224, 224) uint8
    rows = [("page", to_input(pages))]
    for kind, summary in tokenizers.items():
        model = load_tokenizer(summary["checkpoint"])
        rows.append((f"{kind} tokenizer", model.decode_codes(model.tokenize(to_input(pages))).clamp(0, 1)))
    fig, axes = plt.subplots(2 * len(rows), n, figsize=(2.2 * n, 2.2 * 2 * len(rows)))
    for r, (label, images) in enumerate(rows):
        for i in range(n):
            for zoom, ax in ((False, axes[r, i]), (True, axes[len(rows) + r, i])):
                image = images[i, 0].numpy()
                ax.imshow(image[32:128, 16:112] if zoom else image, cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
            axes[r, 0].set_ylabel(label)
            axes[len(rows) + r, 0].set_ylabel(f"{label}, zoom")
    fig.suptitle("doc-pages test pages and their reconstructions from the tokenizers' codes (14 x 14 codes of 512)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_table(rows: list[dict], tokenizers: dict, steps: int, out: Path) -> None:
    shared = ", ".join(f"{k} {v}" for k, v in SHARED.items() if k not in ("data", "checkpoint_every", "probe_every"))
    n_prov, n_genre = rows[0]["provenance"]["n_test"], rows[0]["genre"]["n_test"]
    se = 0.5 / math.sqrt(min(n_prov, n_genre))
    tok = ", ".join(f"{k} {v}" for k, v in TOKENIZER.items())
    lines = [
        "# Documents: DiT, dit-pixel, MAE and random init at one budget",
        "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/documents.py --steps {steps}` on this 2-core CPU machine "
        f"(torch {torch.__version__}), one training at a time in its own process. Pretraining on the 830 training "
        f"pages of doc-pages (grey, 224 px: DiT's default page size; labels unused): {steps} steps, {shared}. "
        "Networks: dit / dit-pixel / random: dit's default HF BEiT (4 layers x 192, 3 heads, MLP 768, 16 px patches, "
        "1.8M parameters); mae: a timm ViT of the same size (4 x 192, 3 heads, MLP 768, 16 px patches; absolute "
        "position embeddings where BEiT has relative position bias). Tokenizers (VQ-VAE, 512 codes, 14 x 14 per "
        f"page): {tok}. Frozen features: weighted kNN (k {K}, T 0.07) and a linear probe (logistic regression), "
        f"top-1 on the test split: provenance = which of 9 manuals a page is from, **real** labels ({n_prov} test "
        f"pages); genre = which of 10 generated genres, **synthetic** labels ({n_genre} test pages). One standard "
        f"error of an accuracy near 0.5 is about ±{se:.3f}.",
        "",
        "| row | provenance kNN [real] | provenance linear [real] | genre kNN [synthetic] | genre linear [synthetic] "
        "| pretrain s | pages/s | final loss | settings beyond SHARED |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = "random init (dit's BEiT)" if r["method"] == "random" else r["method"]
        seconds = r.get("train_seconds")
        speed = f"{steps * SHARED['batch_size'] / seconds:.1f}" if seconds else "-"
        lines.append(f"| {label} | {r['provenance']['knn']:.4f} | {r['provenance']['linear']:.4f} | "
                     f"{r['genre']['knn']:.4f} | {r['genre']['linear']:.4f} | {seconds or '-'} | {speed} | "
                     f"{r.get('final_loss', '-')} | {settings_text(r)} |")
    lines += ["", "pretrain s: wall-clock of the whole `selfsup train` process (start-up, page codes, checkpoints); "
              "pages/s = steps x batch / that.", "",
              "## The tokenizers (codes of all 830 training pages; blank = a patch of one grey value)", "",
              "| encoder | recon MSE (test pages) | codes used | perplexity of the code frequencies | blank "
              "patches | codes on blank patches | test pages: codes used / perplexity / codes on blank | train s |",
              "|---|---|---|---|---|---|---|---|"]
    for kind, t in tokenizers.items():
        lines.append(f"| {kind} | {t['shown_recon_mse']:.5f} | {t['codes_used']} / {t['codes']} | "
                     f"{t['code_perplexity']:.1f} | {t['blank_share']:.3f} | {t['blank_codes']} | "
                     f"{t['test']['codes_used']} / {t['test']['code_perplexity']:.1f} / {t['test']['blank_codes']} "
                     f"| {t['seconds']} |")
    lines += ["", "## DiT's masked-token prediction on the 207 held-out pages (masks seeded with 0)", "",
              "| row | CE, all masked | accuracy, all masked | CE, non-blank | accuracy, non-blank | masked that are "
              "blank | entropy of the code frequencies | CE of predicting the code frequencies | accuracy of always "
              "the most frequent code |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "masked_tokens" in r:
            m = r["masked_tokens"]
            keys = ("loss", "accuracy", "loss_not_blank", "accuracy_not_blank", "blank_share_masked",
                    "frequency_entropy", "frequency_loss", "most_frequent_accuracy")
            lines.append(f"| {r['method']} | " + " | ".join(f"{m[k]:.3f}" for k in keys) + " |")
    lines += ["", "Figure beside this file: `documents_tokenizer.png` (held-out pages, their reconstructions from "
              "the codes of each tokenizer, and 3x zooms)."]
    write_results(lines, rows, out)


if __name__ == "__main__":
    main()
