"""The tokenizer's codes of every page of a data set, computed once per tokenizer and cached: DiT's BEiT targets are
these ids, and recomputing them every training step would run the tokenizer's encoder on every batch for nothing.

Cache: CACHE/doc-codes/<sha256 of the tokenizer checkpoint>-<sha256 of the pages' bytes>.npy, int32 (N, h, w), so
a retrained tokenizer (another checkpoint file) or other pages (another set, split or folder content) never read a
stale file. A cache that cannot be written is a logged warning.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch
from tqdm import tqdm

from selfsup.data.cache import cache_root, save_array
from selfsup.data.images import ImageSet
from selfsup.errors import SelfsupError

from .train import _all_images, file_hash, load_tokenizer, open_pages, to_input

FOLDER = "doc-codes"


def page_codes(tokenizer: str | os.PathLike, pages: str | ImageSet, split: str = "train", batch_size: int = 64,
               progress: bool = True) -> torch.Tensor:
    """int64 (N, S/P, S/P): the code of every P x P patch of every page of `pages` (a --data spec, read with
    `open_pages(pages, split)`, or an ImageSet of uint8 (1, S, S) pages) under the tokenizer checkpoint `tokenizer`.

    Computed once (batches of `batch_size`, no gradients) and cached under the hashes of the checkpoint and of the
    pages; later calls read the cache. Raises SelfsupError for a bad checkpoint or spec (see load_tokenizer,
    open_pages) or pages of another size or channel count than the tokenizer's.
    """
    images = _all_images(open_pages(pages, split) if isinstance(pages, str) else pages)  # (N, C, S, S) uint8
    digest = hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()
    cached = cache_root() / FOLDER / f"{file_hash(tokenizer)[:32]}-{digest[:32]}.npy"
    try:
        return torch.from_numpy(np.load(cached).astype(np.int64))
    except (OSError, ValueError):
        pass
    model = load_tokenizer(tokenizer)
    cfg = model.config
    if tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise SelfsupError(f"the pages are {tuple(images.shape[1:])} (C, H, W) but the tokenizer was trained on "
                           f"{(cfg.channels, cfg.image_size, cfg.image_size)}: pass pages of that size, or train a "
                           "tokenizer on these")
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="tokenizing pages (once per tokenizer)", unit="batch",
                      disable=None if progress else True):
        chunks.append(model.tokenize(to_input(images[start:start + batch_size])))
    codes = torch.cat(chunks)  # (N, h, w)
    save_array(cached, codes.numpy().astype(np.int32), "the page codes")
    return codes
