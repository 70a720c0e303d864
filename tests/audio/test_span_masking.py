import math

import pytest
import torch

from selfsup.audio.span_masking import (decay_to_reach, gumbel_temperature, sample_distractors, span_mask,
                                        span_starts, spans_from_starts)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def naive_spans(starts: torch.Tensor, span: int, lengths: list[int] | None = None) -> torch.Tensor:
    """Mask the `span` steps from every start, one start at a time, never past the utterance's length."""
    mask = torch.zeros_like(starts)
    for b, t in starts.nonzero().tolist():
        end = t + span if lengths is None else min(t + span, lengths[b])
        mask[b, t:end] = True
    return mask


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of every maximal run of True in a 1-d bool tensor."""
    out, start = [], None
    for t, m in enumerate(row.tolist() + [False]):
        if m and start is None:
            start = t
        elif not m and start is not None:
            out.append((start, t - start))
            start = None
    return out


def test_rate_is_one_minus_one_minus_p_to_the_span_on_long_sequences():
    p, span, T = 0.065, 10, 4000
    mask = span_mask(torch.full((16,), T), T, p, span, generator=seeded(0))
    middle = mask[:, span:-span].float().mean().item()  # away from the ends, where fewer spans can cover a step
    assert abs(middle - (1 - (1 - p) ** span)) < 0.01  # 0.489 (paper: "about 49%")
    assert abs(mask.float().mean().item() - 0.489) < 0.015


def test_other_rates_and_spans():
    for p, span in [(0.02, 5), (0.2, 3)]:
        mask = span_mask(torch.full((8,), 3000), 3000, p, span, generator=seeded(1))
        assert abs(mask[:, span:-span].float().mean().item() - (1 - (1 - p) ** span)) < 0.015


def test_starts_are_bernoulli_p_over_the_steps_where_a_whole_span_fits():
    p, span, T = 0.1, 10, 2000
    lengths = torch.tensor([2000, 1500, 300])
    starts = span_starts(lengths, T, p, span, generator=seeded(2))
    for b, L in enumerate(lengths.tolist()):
        assert not starts[b, L - span + 1:].any()  # a span never runs past the utterance
    assert abs(starts[:2, :1491].float().mean().item() - p) < 0.01


def test_mask_is_the_spans_of_length_span_from_the_drawn_starts():
    lengths, T, span = torch.tensor([200, 120, 37, 10, 4]), 200, 10
    mask = span_mask(lengths, T, 0.1, span, generator=seeded(3))
    starts = span_starts(lengths, T, 0.1, span, generator=seeded(3))
    assert torch.equal(mask, naive_spans(starts, span, lengths.tolist()))
    assert torch.equal(spans_from_starts(starts, span), naive_spans(starts, span))
    for b, L in enumerate(lengths.tolist()):
        for _, n in runs(mask[b]):  # runs are unions of whole spans (shorter only for an utterance shorter than span)
            assert n >= min(span, L)


def test_padding_is_never_masked_and_every_utterance_has_a_span():
    lengths, T = torch.tensor([300, 50, 11, 10, 3, 1]), 300
    for seed in range(20):
        mask = span_mask(lengths, T, 0.065, 10, generator=seeded(seed))
        padding = torch.arange(T)[None] >= lengths[:, None]
        assert not (mask & padding).any()
        assert mask.any(1).all()
    assert torch.equal(mask[3, :10], torch.ones(10, dtype=torch.bool))  # length == span: one span covers it
    assert mask[4, :3].all() and mask[5, 0]  # shorter than a span: masked whole


def test_with_p_zero_exactly_one_span_uniformly_placed():
    T, span = 60, 10
    mask = span_mask(torch.full((2000,), T), T, 0.0, span, generator=seeded(4))
    assert (mask.sum(1) == span).all()
    first = mask.float().argmax(1)  # the single start, uniform over 0 .. T - span
    counts = torch.bincount(first, minlength=T - span + 1)
    assert len(counts) == T - span + 1 and counts.min() > 15 and counts.max() < 65  # mean 39


def test_same_seed_same_mask_and_distractors():
    lengths = torch.tensor([100, 80])
    assert torch.equal(span_mask(lengths, 100, generator=seeded(5)), span_mask(lengths, 100, generator=seeded(5)))
    assert not torch.equal(span_mask(lengths, 100, generator=seeded(5)), span_mask(lengths, 100, generator=seeded(6)))
    mask = span_mask(lengths, 100, generator=seeded(7))
    assert torch.equal(sample_distractors(mask, 20, seeded(8)), sample_distractors(mask, 20, seeded(8)))


def test_lengths_outside_one_to_T_are_rejected():
    with pytest.raises(ValueError):
        span_mask(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError):
        span_mask(torch.tensor([11]), 10)


def test_distractors_are_other_masked_steps_of_the_same_utterance():
    lengths, T, K = torch.tensor([150, 90, 40]), 150, 30
    mask = span_mask(lengths, T, generator=seeded(9))
    d = sample_distractors(mask, K, seeded(10))
    assert d.shape == (3, T, K) and d.dtype == torch.long
    for b, t in mask.nonzero().tolist():
        assert mask[b, d[b, t]].all()  # every distractor is a masked step of utterance b
        assert (d[b, t] != t).all()  # never the step itself
    assert (d[~mask] == 0).all()


def test_distractors_are_uniform_over_the_other_masked_steps():
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, [2, 3, 4, 10, 11, 30, 39]] = True  # 7 masked steps
    d = sample_distractors(mask, 6000, seeded(11))
    for t in mask[0].nonzero().squeeze(1).tolist():
        counts = torch.bincount(d[0, t], minlength=40)
        others = [s for s in mask[0].nonzero().squeeze(1).tolist() if s != t]
        assert counts[t] == 0 and counts.sum() == counts[others].sum()
        assert (counts[others] - 1000).abs().max() < 130  # 6 others, 1000 each; sd ~ 29


def test_a_single_masked_step_points_at_itself():
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 3] = True
    mask[1, [1, 5]] = True
    d = sample_distractors(mask, 5, seeded(12))
    assert (d[0, 3] == 3).all()  # no other step to draw; contrastive_loss drops it as identical to the target
    assert (d[1, 1] == 5).all() and (d[1, 5] == 1).all()


def test_gumbel_temperature_schedule():
    assert gumbel_temperature(0) == 2.0
    assert gumbel_temperature(10**7) == 0.5
    assert gumbel_temperature(100_000) == pytest.approx(2.0 * 0.999995**100_000)
    values = [gumbel_temperature(s) for s in range(0, 400_000, 1000)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    reach_at = math.log(0.25) / math.log(0.999995)  # ~277k updates, of the paper's 400k
    assert gumbel_temperature(int(reach_at) - 1000) > 0.5 and gumbel_temperature(int(reach_at) + 1) == 0.5


def test_decay_to_reach_the_end_at_a_given_step():
    decay = decay_to_reach(300)
    assert gumbel_temperature(0, decay=decay) == 2.0
    assert gumbel_temperature(150, decay=decay) == pytest.approx(1.0)  # geometric: halfway in log
    assert gumbel_temperature(300, decay=decay) == pytest.approx(0.5)
    assert gumbel_temperature(299, decay=decay) > 0.5
