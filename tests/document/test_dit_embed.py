"""DiT's collapse monitor on mostly white pages: it sees the pooled patch states minus those of a blank page, so it
does not call an untrained network's embeddings of different pages collapsed, and still calls a network that ignores
its input collapsed; the probes' `embed` of plain pages stays the mean-pooled states."""

from __future__ import annotations

import numpy as np
import torch

from selfsup.methods import build
from selfsup.train.monitor import collapse_figures, collapse_warning, frozen_embeddings
from selfsup.views.eval import EvalTransform

TINY = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "patch": 16}


def white_pages(n: int = 16, size: int = 224) -> torch.Tensor:
    """n normalised pages (n, 1, S, S) like doc-pages: ~85 % white, lines of 'text' (dark bars) of random lengths."""
    rng = np.random.default_rng(0)
    pages = []
    for _ in range(n):
        page = np.full((1, size, size), 255, dtype=np.uint8)
        for y in range(16 + int(rng.integers(0, 8)), size - 24, 14):
            page[0, y:y + 4, 16:16 + int(rng.integers(20, size - 40))] = int(rng.integers(0, 90))
        pages.append(EvalTransform(size, 1)(torch.from_numpy(page)))
    return torch.stack(pages)


def test_embed_of_white_pages_is_not_a_false_collapse_and_a_blind_network_still_is():
    torch.manual_seed(0)
    method = build("dit-pixel", {"in_chans": 1, "image_size": 224}, **TINY).eval()
    x = white_pages()
    batch = [x, torch.zeros(len(x), 196, dtype=torch.bool)]  # a training batch of dit-pixel: pages, masks
    with torch.no_grad():
        pooled = method.finetune_encoder()(x)  # (B, D): the mean patch state, what embed returned before
        blank = method.finetune_encoder()(torch.ones(1, 1, 224, 224))  # a white page (255 -> 1.0 normalised)
        assert torch.equal(method.embed(x), pooled)  # probes: unchanged
        monitored = method.embed(method.monitor_batch(batch))
        torch.testing.assert_close(monitored, pooled - blank, atol=1e-5, rtol=1e-5)  # a constant shift
        assert torch.equal(frozen_embeddings(method, batch), monitored)
        blank_pages = method.monitor_batch([torch.ones(2, 1, 224, 224)])
        torch.testing.assert_close(method.embed(blank_pages), torch.zeros(2, 32), atol=1e-5, rtol=0)
    # the pooled states of all pages share the white margin's state: a random init looks collapsed
    before = collapse_figures(pooled)
    assert collapse_warning("dit-pixel", 50, before, 32) is not None and before["std_x_sqrt_d"] < 0.1
    figures = collapse_figures(frozen_embeddings(method, batch))
    assert collapse_warning("dit-pixel", 50, figures, 32) is None, figures
    assert figures["std_x_sqrt_d"] > 3 * before["std_x_sqrt_d"]
    with torch.no_grad():  # a network whose states do not depend on the page: every page embeds as the blank one
        method.backbone.embeddings.patch_embeddings.projection.weight.zero_()
    blind = collapse_figures(frozen_embeddings(method, batch))
    assert collapse_warning("dit-pixel", 50, blind, 32) is not None and blind["std_x_sqrt_d"] == 0
