"""Collapse monitors: are the encoder's embeddings of a training batch still spread out, or all the same?

Every `monitor_every` steps the trainer embeds the first view of the current batch with the method's frozen encoder
(`embed`, in eval mode and without gradients, so training is unchanged and resumes bit for bit) and logs two
figures of the (B, D) embeddings z:
- std: the per-dimension standard deviation of the L2-normalised z, averaged over the D dimensions. Embeddings
  spread over the sphere give about 1/√D; a collapse to one point gives 0 (SimSiam, Chen & He 2021, Fig. 2).
- effective rank: exp of the entropy of the normalised singular values of the centred z (Roy & Vetterli, The
  effective rank, EUSIPCO 2007); between 1 (everything along one direction) and min(B, D); RankMe (Garrido et al.,
  ICML 2023) uses it to tell a useful representation from a collapsed one.
Below the thresholds the run prints one warning line (once per run) naming the method, the step and the figures.
"""

import math

import torch
from torch import nn

# std·√D or effective rank below these mean collapse: to a point, or onto a handful of directions (SimSiam without
# its stop-gradient: effective rank 97 -> 3 in 300 steps, benchmarks/results/collapse_curves.md, where the healthy
# run stays above 50); the collapsing and healthy runs of tests/train/test_monitor.py are on either side too
SPREAD_FLOOR = 0.1  # std·√D: 1 for embeddings spread like random directions
RANK_FLOOR = 4.0


def embedding_std(z: torch.Tensor) -> float:
    """z (B, D) -> mean over the D dimensions of the std over the batch of z / ||z||."""
    return float(nn.functional.normalize(z.float(), dim=1).std(dim=0).mean())


def effective_rank(z: torch.Tensor) -> float:
    """z (B, D) -> exp(H(p)), p = σ / Σσ the normalised singular values of z minus its batch mean (Roy & Vetterli
    2007, Eq. 3); 1.0 for z with no spread at all."""
    sigma = torch.linalg.svdvals(z.float() - z.float().mean(0))
    if float(sigma.sum()) <= 1e-12:
        return 1.0
    p = sigma / sigma.sum()
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-30))).sum()))


@torch.no_grad()
def frozen_embeddings(method: nn.Module, batch) -> torch.Tensor:
    """The method's `embed` of its `monitor_batch(batch)` in eval mode (no dropout, BN running statistics: no state
    of the method changes), every module's mode restored afterwards -> (B, D) float."""
    modes = [(module, module.training) for module in method.modules()]
    method.eval()
    try:
        z = method.embed(method.monitor_batch(batch))
    finally:
        for module, training in modes:
            module.train(training)
    return z.float().flatten(1)


def collapse_figures(z: torch.Tensor) -> dict[str, float]:
    """z (B, D) -> {"std", "std_x_sqrt_d", "effective_rank"} as logged under collapse/."""
    std = embedding_std(z)
    return {"std": std, "std_x_sqrt_d": std * math.sqrt(z.shape[1]), "effective_rank": effective_rank(z)}


def collapse_warning(name: str, step: int, figures: dict[str, float], dim: int) -> str | None:
    """One line when `figures` say the embeddings collapsed, else None."""
    if figures["std_x_sqrt_d"] >= SPREAD_FLOOR and figures["effective_rank"] >= RANK_FLOOR:
        return None
    return (f"{name}'s embeddings look collapsed at step {step}: std of the normalised embeddings "
            f"{figures['std']:.2g} (spread ones give about 1/sqrt(D) = {1 / math.sqrt(dim):.2g}), effective rank "
            f"{figures['effective_rank']:.2f} of {dim}; what it learns now is likely useless downstream: check the "
            "method's anti-collapse settings (stop-gradient, EMA rate, temperature) or lower the learning rate")
