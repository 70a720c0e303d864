"""wav2vec 2.0's contrastive and codebook diversity losses (Baevski et al. 2020, sec. 3.3, eq. 3-4).

Contrastive (eq. 3): for each masked step t, -log of the softmax of the true quantised target q_t among
{q_t} + K distractors, with similarity sim(c_t, q) = cos(c_t, q) / tau.
Diversity (eq. 4): L_d = (G V - sum_g exp(H(p_g))) / (G V), p_g the softmax of the quantiser's logits for
codebook g averaged over the batch; 0 when every entry of every codebook is used equally, toward 1 when one is.

Reduction: the contrastive term is the MEAN over masked steps. The paper's code (fairseq, and transformers'
Wav2Vec2ForPreTraining) sums over masked steps, multiplies the diversity and penalty terms by the same count,
and fairseq then divides the gradients by that count; the mean is that same objective, stated so that the
learning rate does not depend on the batch size or on how many steps the masks happened to cover.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(c: torch.Tensor, q: torch.Tensor, mask: torch.Tensor, distractors: torch.Tensor,
                     temperature: float = 0.1) -> torch.Tensor:
    """c (B, T, D) projected context outputs; q (B, T, D) projected quantised targets; mask (B, T) bool, the
    masked steps (at least one); distractors (B, T, K) long, time indices into the same utterance (from
    sample_distractors) -> scalar mean over masked steps of cross-entropy with the true target as class 0.
    A distractor identical to the target (same codewords, frequent early in training) is left out (logit
    -inf) as the paper's code does: it is not a negative, and its logit would equal the positive's."""
    b = mask.nonzero()[:, 0]  # (N,) utterance of each masked step
    c_t, q_t = c[mask], q[mask]  # (N, D)
    q_d = q[b[:, None], distractors[mask]]  # (N, K, D)
    candidates = torch.cat([q_t[:, None], q_d], dim=1)  # (N, 1 + K, D): the target first
    logits = F.cosine_similarity(c_t[:, None], candidates, dim=-1) / temperature  # (N, 1 + K)
    same = (q_d == q_t[:, None]).all(-1)  # (N, K)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(b))  # mean over the N masked steps


def perplexity(probs: torch.Tensor) -> torch.Tensor:
    """probs (N, G, V), each row a distribution over a codebook's V entries -> scalar sum_g exp(H(p_g)),
    p_g = the mean over the N rows; between G (one entry per codebook) and G V (all used equally).
    x log x is taken as 0 at x = 0 (xlogy), as transformers' quantiser; fairseq adds 1e-7 inside the log."""
    p = probs.mean(0)  # (G, V)
    H = -torch.xlogy(p, p).sum(-1)  # (G,) entropy of each codebook's average use
    return H.exp().sum()


def diversity_loss(probs: torch.Tensor) -> torch.Tensor:
    """probs (N, G, V) softmax of the quantiser's logits (no Gumbel noise) -> scalar (G V - perplexity) / (G V)."""
    GV = probs.shape[1] * probs.shape[2]
    return (GV - perplexity(probs)) / GV
