"""wav2vec 2.0's masking in latent space, its distractor sampling and its Gumbel temperature schedule
(Baevski et al. 2020, sec. 3.1, 3.3 and 4.2).

Masking: every time step that leaves room for a whole span is a span start with probability p = 0.065, and the
M = 10 steps from it are masked; spans may overlap, so about 1 - (1 - p)^M = 49% of the steps are masked
(the paper's figure). Starts are restricted to t <= length - M so that every span is whole, as the paper's
code (fairseq's compute_mask_indices); padding steps (t >= length) are never masked. An utterance that drew no
start gets one, uniformly among its allowed starts, so that every utterance has masked steps and the contrastive
loss is defined for it (fairseq's min_masks; it changes the rate only where (1 - p)^(length - M + 1) is not
small, i.e. utterances shorter than ~50 steps, 1 s). An utterance shorter than M is masked whole.

Distractors: for each masked step, K indices of other masked steps of the same utterance, drawn uniformly with
replacement (the paper's code draws an index among the other n - 1 and skips over the step itself).

Written here rather than taken from transformers (_compute_mask_indices, _sample_negative_indices): those draw
from numpy's global RNG (no per-call seed) and fix the number of spans per utterance (prob * length / M, from
fairseq, where the paper's p = 0.065 is written mask_prob = 0.65); here each start is its own Bernoulli(p) draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def span_starts(lengths: torch.Tensor, T: int, p: float = 0.065, span: int = 10,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """lengths (B,) long, each >= 1 -> (B, T) bool, True where a masked span starts (at least one per row)."""
    if (lengths < 1).any() or (lengths > T).any():
        raise ValueError(f"every length must be in 1..{T}, got {lengths.tolist()}")
    B = lengths.shape[0]
    t = torch.arange(T, device=lengths.device)  # (T,)
    last = (lengths - span).clamp(min=0)  # (B,) the last start whose span fits in the utterance
    allowed = t[None] <= last[:, None]  # (B, T)
    u = torch.rand(2, B, T, generator=generator).to(lengths.device)
    starts = allowed & (u[0] < p)  # (B, T) Bernoulli(p) at every allowed step
    forced = F.one_hot(torch.where(allowed, u[1], -1.0).argmax(1), T).bool()  # (B, T) one uniform allowed start
    return torch.where(starts.any(1, keepdim=True), starts, forced)


def spans_from_starts(starts: torch.Tensor, span: int) -> torch.Tensor:
    """starts (B, T) bool -> (B, T) bool: step t is masked when a span starts in t - span + 1 .. t."""
    count = F.pad(starts.long().cumsum(1), (span, 0))  # (B, span + T), count[:, span + t] = starts in 0..t
    return (count[:, span:] - count[:, :-span]) > 0  # starts in t - span + 1 .. t


def span_mask(lengths: torch.Tensor, T: int, p: float = 0.065, span: int = 10,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """lengths (B,) long: valid steps of each utterance (>= 1) -> (B, T) bool mask, True = masked.
    Steps >= length are never masked; every row has at least one span (module docstring)."""
    valid = torch.arange(T, device=lengths.device)[None] < lengths[:, None]  # (B, T)
    return spans_from_starts(span_starts(lengths, T, p, span, generator), span) & valid  # cuts only length < span


def sample_distractors(mask: torch.Tensor, K: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """mask (B, T) bool -> (B, T, K) long: for each masked step, the time indices of K other masked steps of the
    same utterance, uniform with replacement; 0 at unmasked steps (unused). An utterance with a single masked
    step has no other to draw: its distractors point at the step itself, which contrastive_loss excludes
    (a distractor identical to the target gets logit -inf), so that step costs 0."""
    B, T = mask.shape
    n = mask.sum(1)  # (B,) masked steps per utterance
    rank = mask.long().cumsum(1) - 1  # (B, T) each masked step's rank among its utterance's masked steps
    u = torch.rand(B, T, K, generator=generator).to(mask.device)
    r = (u * (n - 1).clamp(min=1)[:, None, None]).long()  # (B, T, K) uniform in 0 .. n - 2
    r = r + ((r >= rank[..., None]) & (n > 1)[:, None, None]).long()  # skip the step itself: 0 .. n - 1 minus rank
    where = torch.argsort((~mask).long(), dim=1, stable=True)  # (B, T) the first n[b] are the masked steps in order
    idx = where.gather(1, r.reshape(B, T * K)).view(B, T, K)  # rank -> time index
    return torch.where(mask[..., None], idx, 0)


def gumbel_temperature(step: int, start: float = 2.0, end: float = 0.5, decay: float = 0.999995) -> float:
    """The Gumbel-softmax temperature at an update: max(start * decay^step, end) (paper sec. 4.2: 2 -> 0.5,
    x 0.999995 per update, which reaches 0.5 after ~277k of its 400k updates)."""
    return max(start * decay**step, end)


def decay_to_reach(end_step: int, start: float = 2.0, end: float = 0.5) -> float:
    """The decay with which gumbel_temperature reaches `end` at `end_step` (short runs): (end / start)^(1/end_step)."""
    return (end / start) ** (1.0 / max(end_step, 1))
