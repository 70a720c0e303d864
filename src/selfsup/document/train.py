"""`selfsup train-tokenizer`: train the page tokenizer (vqvae.py) on document pages, write its checkpoint and a
reconstruction grid; `load_tokenizer` reads the checkpoint back; `open_pages` turns a `--data` spec into pages."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from selfsup import __version__
from selfsup.data.builtin import load_builtin
from selfsup.data.documents import open_page_folder
from selfsup.data.images import ArrayImageSet, ImageSet
from selfsup.errors import SelfsupError

from .vqvae import VQVAE, TokenizerConfig, code_statistics

DOC_BUILTIN = ("doc-pages", "doc-genres")
CHECKPOINT = "tokenizer.ckpt"
GRID = "reconstructions.png"
SUMMARY = "tokenizer.json"
KEY = "selfsup_tokenizer"  # the checkpoint's entry naming what it is
DEFAULT_STEPS = 2000


def open_pages(spec: str, split: str = "train") -> ImageSet:
    """Grayscale pages for the tokenizer: `doc-pages`, `doc-genres` (or NAME:DIR of those), or a folder of PDFs and
    page images (all its pages whatever `split`). Images uint8 (N, 1, 224, 224).
    Raises SelfsupError for any other spec, naming what to pass."""
    name, colon, folder = spec.partition(":")
    if name in DOC_BUILTIN:
        return load_builtin(name, split, folder if colon else None)
    path = os.path.expanduser(spec)
    if os.path.isdir(path):
        return open_page_folder(spec)
    if os.path.exists(path):
        raise SelfsupError(f"'{spec}' is a file, not a folder: pass the folder that holds the PDFs or page images, "
                           f"or {' or '.join(DOC_BUILTIN)}")
    raise SelfsupError(f"'{spec}' is neither a folder nor a built-in set of pages: pass {' or '.join(DOC_BUILTIN)}, "
                       "or a folder of PDFs and page images")


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 pages (B, C, S, S) -> float in [0, 1], the tokenizer's input and reconstruction target."""
    return images.float() / 255


def train_tokenizer(data: str = "doc-pages", out: str | os.PathLike = "runs/tokenizer", max_steps: int | None = None,
                    batch_size: int = 16, lr: float = 1e-3, seed: int = 0, progress: bool = True,
                    **config: object) -> dict:
    """Train a VQVAE on the pages of `data` for `max_steps` (DEFAULT_STEPS) Adam steps on batches of `batch_size`
    pages drawn with replacement by a generator seeded with `seed`; `config` overrides TokenizerConfig fields
    (patch, codes, dim, width, beta).

    Writes OUT/tokenizer.ckpt (atomically), OUT/reconstructions.png (8 pages not trained on where the set has a
    test split, originals above their reconstructions) and OUT/tokenizer.json; returns that summary: final losses and
    batch_perplexity as means over the last 50 steps; codes_used, code_entropy_nats, code_perplexity, blank_share and
    blank_codes over the codes of all training pages (vqvae.code_statistics; the batch perplexity of 16 pages can look
    healthy while the codebook has collapsed on the whole set); paths, seconds.
    """
    unknown = set(config) - {"patch", "codes", "dim", "width", "beta", "encoder"}  # size and channels: the data's
    if unknown:
        raise SelfsupError(f"unknown tokenizer option(s) {', '.join(sorted(unknown))}: pass patch, codes, dim, "
                           "width, beta or encoder")
    steps = DEFAULT_STEPS if max_steps is None else max_steps
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise SelfsupError(f"max-steps {steps}, batch-size {batch_size}, lr {lr}: pass positive values")
    overrides = {k: v for k, v in config.items() if v is not None}
    TokenizerConfig(**overrides, image_size=int(overrides.get("patch", 16))).check()  # before any page is read
    out = Path(out).expanduser()
    pages = open_pages(data, "train")
    shown = _shown_pages(data, pages)
    c, s = pages[0][0].shape[0], pages[0][0].shape[-1]
    cfg = TokenizerConfig(image_size=s, channels=c, **overrides)
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    images = _all_images(pages)  # (N, C, S, S) uint8
    history: list[dict[str, float]] = []
    start = time.time()
    bar = tqdm(range(steps), desc=f"train-tokenizer on {data}", unit="step", disable=None if progress else True)
    model.train()
    for step in bar:
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        result = model(to_input(batch))
        optimizer.zero_grad(set_to_none=True)
        result["loss"].backward()
        optimizer.step()
        model.after_step()
        logged = ("loss", "recon", "codebook", "commit", "batch_perplexity")
        history.append({k: float(result[k].detach()) for k in logged})
        if not torch.isfinite(result["loss"]):
            raise SelfsupError(f"the tokenizer's loss became {history[-1]['loss']} at step {step + 1}: pass a "
                               f"smaller --lr than {lr}")
        if step % 10 == 0:
            bar.set_postfix(recon=f"{history[-1]['recon']:.4f}", batch_ppl=f"{history[-1]['batch_perplexity']:.0f}")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = {KEY: {"config": model.describe(), "version": __version__, "data": data, "steps": steps,
                        "seed": seed, "lr": lr, "batch_size": batch_size},
                  "state_dict": model.state_dict()}
    write_atomic(checkpoint, out / CHECKPOINT)
    with torch.no_grad():
        originals = to_input(shown)
        recon = model(originals)
    save_grid(shown, recon["x_hat"], out / GRID)
    last = history[-50:]
    summary = {k: round(float(np.mean([h[k] for h in last])), 6) for k in last[0]}
    codes = torch.cat([model.tokenize(to_input(images[i:i + 64])) for i in range(0, len(images), 64)])  # (N, h, w)
    summary.update(shown_recon_mse=round(float(recon["recon"]), 6), **code_statistics(codes, images),
                   codes=cfg.codes, encoder=cfg.encoder, grid=f"{s // cfg.patch}x{s // cfg.patch}", data=data,
                   pages=len(images),
                   steps=steps, seconds=round(time.time() - start, 1), checkpoint=str(out / CHECKPOINT),
                   reconstructions=str(out / GRID), first=history[0])
    with open(out / SUMMARY, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def _all_images(pages: ImageSet) -> torch.Tensor:
    if isinstance(pages, ArrayImageSet):
        return pages.images
    return torch.stack([pages[i][0] for i in range(len(pages))])


def _shown_pages(data: str, train: ImageSet, n: int = 8) -> torch.Tensor:
    """n pages for the figure: the first of a seeded sample of the test split (built-ins), else of the training set."""
    name = data.partition(":")[0]
    pages = open_pages(data, "test") if name in DOC_BUILTIN else train
    pick = torch.randperm(len(pages), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return torch.stack([pages[int(i)][0] for i in pick])


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: str | os.PathLike) -> Path:
    """A PNG with the uint8 pages `originals` (B, C, S, S) in the top row and `reconstructions` (float (B, C, S, S)
    in [0, 1], clipped) below, 4 px of grey between pages."""
    b, _, s, _ = originals.shape
    gap = 4
    canvas = np.full((2 * s + 3 * gap, b * s + (b + 1) * gap), 128, dtype=np.uint8)
    recon = (reconstructions.clamp(0, 1) * 255).round().to(torch.uint8)
    for row, batch in enumerate((originals, recon)):
        for i in range(b):
            y, x = gap + row * (s + gap), gap + i * (s + gap)
            canvas[y:y + s, x:x + s] = batch[i, 0].cpu().numpy()
    path = Path(path)
    Image.fromarray(canvas).save(path)
    return path


def write_atomic(checkpoint: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over it: a crash leaves the old file intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_tokenizer(path: str | os.PathLike) -> VQVAE:
    """The VQVAE of a checkpoint `train_tokenizer` wrote, in eval mode (loaded with weights_only=True).
    Raises SelfsupError when the file is missing, unreadable or not a tokenizer checkpoint."""
    path = Path(path).expanduser()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SelfsupError(f"tokenizer checkpoint '{path}' does not exist: pass OUT/{CHECKPOINT} of "
                           "`selfsup train-tokenizer --out OUT`") from None
    except Exception as e:  # a truncated zip, a pickle with code: whatever torch raises, the file is wrong
        raise SelfsupError(f"cannot read '{path}' as a tokenizer checkpoint ({type(e).__name__}): pass "
                           f"OUT/{CHECKPOINT} of `selfsup train-tokenizer --out OUT`") from None
    if not isinstance(checkpoint, dict) or KEY not in checkpoint:
        raise SelfsupError(f"'{path}' is not a tokenizer checkpoint: pass OUT/{CHECKPOINT} of "
                           "`selfsup train-tokenizer --out OUT`")
    config = {"encoder": "conv", **checkpoint[KEY]["config"]}  # checkpoints before `encoder` existed coded pages
    model = VQVAE(TokenizerConfig(**config))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def file_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["file_hash", "load_tokenizer", "open_pages", "save_grid", "to_input", "train_tokenizer"]
