import math

import pytest
import torch

from selfsup.losses.wav2vec2 import contrastive_loss, diversity_loss, perplexity


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())


def naive_contrastive(c, q, mask, distractors, tau):
    """Paper eq. 3, one masked step at a time: -log exp(sim(c_t, q_t)) / sum over {q_t} + distractors of
    exp(sim(c_t, q~)), sim = cos / tau, leaving out distractors equal to q_t; mean over the masked steps."""
    losses = []
    for b in range(c.shape[0]):
        for t in range(c.shape[1]):
            if not mask[b, t]:
                continue
            positive = torch.exp(cos(c[b, t], q[b, t]) / tau)
            denominator = positive
            for d in distractors[b, t].tolist():
                if not torch.equal(q[b, d], q[b, t]):
                    denominator = denominator + torch.exp(cos(c[b, t], q[b, d]) / tau)
            losses.append(-torch.log(positive / denominator))
    return sum(losses) / len(losses)


def naive_diversity(probs):
    """Paper eq. 4 with loops: (G V - sum_g exp(-sum_v p_gv log p_gv)) / (G V), p_gv averaged over the rows."""
    N, G, V = probs.shape
    total = 0
    for g in range(G):
        entropy = 0
        for v in range(V):
            p = sum(probs[n, g, v] for n in range(N)) / N
            entropy = entropy - p * torch.log(p)
        total = total + torch.exp(entropy)
    return (G * V - total) / (G * V)


def batch(seed: int, B: int = 3, T: int = 12, D: int = 5, K: int = 4):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, T, D, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(B, T, D, dtype=torch.float64, generator=g, requires_grad=True)
    mask = torch.rand(B, T, generator=g) < 0.5
    mask[:, :2] = True  # at least two masked steps per utterance
    distractors = torch.randint(T, (B, T, K), generator=g)  # any index works for the loss itself
    return c, q, mask, distractors


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_contrastive_matches_naive_loop_values_and_gradients(tau):
    c, q, mask, distractors = batch(0)
    ours = contrastive_loss(c, q, mask, distractors, tau)
    reference = naive_contrastive(c, q, mask, distractors, tau)
    torch.testing.assert_close(ours, reference)
    for a, b in zip(torch.autograd.grad(ours, (c, q)), torch.autograd.grad(reference, (c, q))):
        torch.testing.assert_close(a, b)


def test_a_distractor_identical_to_the_target_is_left_out():
    c, q, mask, distractors = batch(1)
    q = q.detach().clone()
    b, t = mask.nonzero()[0].tolist()
    distractors[b, t, :2] = t  # the step itself: identical vector
    q[b, 5] = q[b, t]  # another step with the same codewords
    distractors[b, t, 2] = 5
    q.requires_grad_(True)
    ours = contrastive_loss(c, q, mask, distractors, 0.1)
    reference = naive_contrastive(c, q, mask, distractors, 0.1)
    torch.testing.assert_close(ours, reference)
    for a, r in zip(torch.autograd.grad(ours, (c, q)), torch.autograd.grad(reference, (c, q))):
        torch.testing.assert_close(a, r)
    # all distractors identical: that step's loss is -log(1) = 0, the mean is over the other steps
    only = torch.zeros_like(mask)
    only[b, t] = True
    distractors[b, t] = t
    assert contrastive_loss(c, q, only, distractors, 0.1).item() == 0.0


def test_contrastive_analytic_value():
    # c_t = q_t and K orthogonal distractors: loss = log(1 + K exp(-1 / tau)), whatever the norms
    K, tau = 3, 0.1
    q = torch.eye(4, dtype=torch.float64)[None] * 2.0  # (1, 4, 4)
    c = q * 5.0
    mask = torch.tensor([[True, False, False, False]])
    distractors = torch.tensor([[[1, 2, 3]]]).expand(1, 4, 3)
    expected = math.log(1 + K * math.exp(-1 / tau))
    assert contrastive_loss(c, q, mask, distractors, tau).item() == pytest.approx(expected)


def test_diversity_matches_naive_loop_values_and_gradients():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(7, 2, 6, dtype=torch.float64, generator=g, requires_grad=True)
    ours = diversity_loss(logits.softmax(-1))
    reference = naive_diversity(logits.softmax(-1))
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(reference, logits)[0])


def test_perplexity_bounds():
    N, G, V = 50, 2, 320
    uniform = torch.full((N, G, V), 1.0 / V)
    assert perplexity(uniform).item() == pytest.approx(G * V, rel=1e-5)  # every entry used equally: the most
    assert diversity_loss(uniform).item() == pytest.approx(0.0, abs=1e-5)
    one_entry = torch.zeros(N, G, V)
    one_entry[:, :, 7] = 1.0
    assert perplexity(one_entry).item() == pytest.approx(G)  # one entry per codebook: 1 each, the least
    assert diversity_loss(one_entry).item() == pytest.approx((G * V - G) / (G * V))
    g = torch.Generator().manual_seed(3)
    for scale in (0.1, 1.0, 10.0):
        value = perplexity((scale * torch.randn(N, G, V, generator=g)).softmax(-1)).item()
        assert G <= value <= G * V
    # N rows each using a different entry once: average uniform over N entries, perplexity N per codebook
    spread = torch.zeros(N, G, V)
    spread[torch.arange(N), :, torch.arange(N)] = 1.0
    assert perplexity(spread).item() == pytest.approx(G * N)
