"""`selfsup train-tokenizer`: train the page tokenizer (vqvae.py) on document pages, write its checkpoint and a
reconstruction grid; `load_tokenizer` reads the checkpoint back; `open_pages` turns a `--data` spec into pages.

A run resumes exactly, as `selfsup train` does (train/resume.py): every source of randomness of a step is a generator
whose state OUT/tokenizer_state.ckpt holds (the batch sampler's own; torch's global one, which the codebook's
initialisation and code restarts draw from, vqvae.py), with the model, Adam's moments, the step and the loss history.
Rerunning the command with the same --out continues where that state stopped; the tokenizer it writes is bitwise that
of a run never stopped (tests/document/test_train_tokenizer.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from contextlib import contextmanager
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
STATE = "tokenizer_state.ckpt"  # what a rerun with the same --out continues from
STATE_KEY = "selfsup_tokenizer_state"
DEFAULT_STEPS = 2000
DEFAULT_CHECKPOINT_EVERY = 200
# What a resumed run may not change (each changes the arithmetic the saved state was made with), and its flag;
# --max-steps (no schedule depends on it: a later end extends the run exactly), --checkpoint-every and --no-progress
# may change.
FIXED = {"data": "--data", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "patch": "--patch",
         "codes": "--codes", "dim": "dim", "width": "--width", "beta": "beta", "encoder": "--encoder"}


class TokenizerInterrupted(SelfsupError):
    """SIGINT or SIGTERM stopped train-tokenizer after it saved its state."""

    exit_code = 130  # 128 + SIGINT; 143 (128 + SIGTERM) when set from the signal


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
                    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, **config: object) -> dict:
    """Train a VQVAE on the pages of `data` for `max_steps` (DEFAULT_STEPS) Adam steps on batches of `batch_size`
    pages drawn with replacement by a generator seeded with `seed`; `config` overrides TokenizerConfig fields
    (patch, codes, dim, width, beta, encoder).

    Writes OUT/tokenizer_state.ckpt every `checkpoint_every` steps, at the end, and when SIGINT/SIGTERM stops the run
    (after the step under way; then raises TokenizerInterrupted). When OUT holds that state, the run continues from
    its step, and ends bitwise where an uninterrupted run would: `max_steps` (None: the saved run's) may differ from
    the saved run's, down to its step (the run is extended or ended earlier, exactly: no schedule depends on it); the
    options of FIXED may not (SelfsupError naming the option, what the run was made with, and what to pass), nor the
    pages.

    At the end writes OUT/tokenizer.ckpt (atomically), OUT/reconstructions.png (8 pages not trained on where the set
    has a test split, originals above their reconstructions) and OUT/tokenizer.json; returns that summary: final
    losses and batch_perplexity as means over the last 50 steps; codes_used, code_entropy_nats, code_perplexity,
    blank_share and blank_codes over the codes of all training pages (vqvae.code_statistics; the batch perplexity of
    16 pages can look healthy while the codebook has collapsed on the whole set); paths, seconds (over all sessions).
    """
    unknown = set(config) - {"patch", "codes", "dim", "width", "beta", "encoder"}  # size and channels: the data's
    if unknown:
        raise SelfsupError(f"unknown tokenizer option(s) {', '.join(sorted(unknown))}: pass patch, codes, dim, "
                           "width, beta or encoder")
    steps = DEFAULT_STEPS if max_steps is None else max_steps
    if steps < 1 or batch_size < 1 or not lr > 0 or checkpoint_every < 1:
        raise SelfsupError(f"max-steps {steps}, batch-size {batch_size}, lr {lr}, checkpoint-every "
                           f"{checkpoint_every}: pass positive values")
    overrides = {k: v for k, v in config.items() if v is not None}
    TokenizerConfig(**overrides, image_size=int(overrides.get("patch", 16))).check()  # before any page is read
    out = Path(out).expanduser()
    run = _run_args(data, batch_size, lr, seed, overrides)
    saved = _load_state(out, run)  # None: a new run
    if saved is not None:
        steps = saved["max_steps"] if max_steps is None else steps  # no --max-steps: the saved run's
        if steps < saved["step"]:
            raise SelfsupError(f"cannot resume train-tokenizer in '{out}' with --max-steps {steps}: its state is at "
                               f"step {saved['step']}; pass --max-steps {saved['step']} or more, or a new --out")
    pages = open_pages(data, "train")
    shown = _shown_pages(data, pages)
    c, s = pages[0][0].shape[0], pages[0][0].shape[-1]
    cfg = TokenizerConfig(image_size=s, channels=c, **overrides)
    images = _all_images(pages)  # (N, C, S, S) uint8
    run["pages"], run["pages_sha256"] = len(images), _pages_hash(images)
    torch.manual_seed(seed)
    model = VQVAE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    first, elapsed = 0, 0.0
    if saved is not None:
        _check_pages(saved["run"], run, out)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])  # the codebook's initialisation and restarts draw from it
        history, first, elapsed = saved["history"], saved["step"], saved["seconds"]
        print(f"resuming train-tokenizer from step {first} of {out}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def save_state(step: int) -> None:
        write_atomic({STATE_KEY: {"version": __version__, "step": step, "max_steps": steps, "run": run,
                                  "history": history, "seconds": elapsed + time.time() - start},
                      "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}, out / STATE)

    bar = tqdm(range(first, steps), desc=f"train-tokenizer on {data}", unit="step", initial=first, total=steps,
               disable=None if progress else True)
    model.train()
    with _stop_requests() as stop:
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
                bar.set_postfix(recon=f"{history[-1]['recon']:.4f}",
                                batch_ppl=f"{history[-1]['batch_perplexity']:.0f}")
            if stop:
                save_state(step + 1)
                bar.close()
                interrupted = TokenizerInterrupted(f"train-tokenizer stopped by {stop[0]} after step {step + 1} of "
                                                   f"{steps}; '{out / STATE}' holds it: rerun the same command to "
                                                   "continue")
                interrupted.exit_code = 128 + int(stop[1])
                raise interrupted
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                save_state(step + 1)
    save_state(steps)  # also a finished run: a later, larger --max-steps extends it
    seconds = elapsed + time.time() - start
    model.eval()
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
                   steps=steps, seconds=round(seconds, 1), checkpoint=str(out / CHECKPOINT),
                   reconstructions=str(out / GRID), first=history[0])
    with open(out / SUMMARY, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def _run_args(data: str, batch_size: int, lr: float, seed: int, overrides: dict) -> dict:
    """The options of FIXED as this run resolves them (a folder as its absolute path, config fields defaulted)."""
    name = data.partition(":")[0]
    where = data if name in DOC_BUILTIN else os.path.realpath(os.path.expanduser(data))
    defaults = TokenizerConfig()
    tokenizer = {k: overrides.get(k, getattr(defaults, k)) for k in ("patch", "codes", "dim", "width", "beta",
                                                                     "encoder")}
    return {"data": where, "batch_size": batch_size, "lr": lr, "seed": seed, **tokenizer}


def _load_state(out: Path, run: dict) -> dict | None:
    """OUT/tokenizer_state.ckpt, checked against this run's options; None when there is none.
    Raises SelfsupError when it is unreadable, or was made with other options (naming the first that differs)."""
    path = out / STATE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        meta = state[STATE_KEY]
    except Exception as e:  # a truncated file or another checkpoint: whatever torch raises, the file is wrong
        raise SelfsupError(f"cannot read '{path}' to resume train-tokenizer ({type(e).__name__}): delete it to "
                           "start again, or pass a new --out") from None
    for key, flag in FIXED.items():
        was = meta["run"].get(key)
        if was != run[key]:
            raise SelfsupError(f"cannot resume train-tokenizer in '{out}' with {flag} {run[key]}: the run was made "
                               f"with {flag} {was}; pass {flag} {was} to continue it, or a new --out")
    return {**meta, **{k: v for k, v in state.items() if k != STATE_KEY}}


def _check_pages(saved: dict, run: dict, out: Path) -> None:
    """The pages now read from --data must be those the saved run trained on (the batches index them)."""
    if (saved["pages"], saved["pages_sha256"]) != (run["pages"], run["pages_sha256"]):
        raise SelfsupError(f"cannot resume train-tokenizer in '{out}': the pages of --data {run['data']} changed "
                           f"since the run began ({saved['pages']} pages then, {run['pages']} now, or other bytes); "
                           "restore them, or pass a new --out")


def _pages_hash(images: torch.Tensor) -> str:
    """sha256 hex digest of the uint8 pages (N, C, S, S) in order."""
    return hashlib.sha256(images.contiguous().numpy()).hexdigest()


@contextmanager
def _stop_requests():
    """A list that becomes [signal name, number] when SIGINT or SIGTERM arrives inside the block, so the loop stops
    after the step under way; a second signal acts as it would without the block. Main thread only (elsewhere signal
    handlers cannot be set and the list stays empty)."""
    stop: list = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) or signal.SIG_DFL for sig in (signal.SIGINT, signal.SIGTERM)}

    def request(number, _frame):
        if not stop:
            stop.extend((signal.Signals(number).name, number))
        signal.signal(number, previous[number])  # the next one is not deferred

    for sig in previous:
        signal.signal(sig, request)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
