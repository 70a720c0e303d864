import torch

from selfsup.views.detcon import WHOLE_VIEW, DetConViews


def _quadrants(size: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """An RGB image of four flat colours and its segment map: segment k is exactly the pixels of colour k."""
    segments = torch.zeros(size, size, dtype=torch.int16)
    segments[: size // 2, size // 2:], segments[size // 2:, : size // 2], segments[size // 2:, size // 2:] = 1, 2, 3
    colours = torch.tensor([[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10]], dtype=torch.uint8)
    return colours[segments.long()].permute(2, 0, 1).contiguous(), segments


def _interior(seg: torch.Tensor) -> torch.Tensor:
    """(S, S) bool: pixels whose 5x5 neighbourhood lies in one segment (away from the antialiased resampling at the
    borders, whose kernel spans about two pixels)."""
    pad = torch.nn.functional.pad(seg[None, None].float(), (2, 2, 2, 2), mode="replicate")
    windows = pad.unfold(2, 5, 1).unfold(3, 5, 1)[0, 0]  # (S, S, 5, 5)
    return (windows == seg[..., None, None]).all(-1).all(-1)


def test_segments_stay_aligned_with_their_pixels_in_both_views():
    image, segments = _quadrants()
    views = DetConViews(32, 3, min_scale=0.2, n_masks=4)  # 32 px: no blur, as the recipe does below 64 px
    for seed in range(20):  # crops, flips, colour and grey changes: each segment stays one colour in the view
        torch.manual_seed(seed)
        v1, v2, s1, s2, ids = views((image, segments))
        assert v1.shape == (3, 32, 32) and s1.shape == (32, 32) and s1.dtype == torch.int64 and ids.shape == (4,)
        for view, seg in ((v1, s1), (v2, s2)):
            inside = _interior(seg)
            assert inside.sum() > 100  # the check below has pixels to look at
            for k in seg.unique():
                pixels = view[:, inside & (seg == k)]  # (3, n)
                if pixels.shape[1]:
                    assert (pixels - pixels[:, :1]).abs().max() < 1e-4, (seed, int(k))
        assert set(ids.tolist()) <= set(s1.unique().tolist()) & set(s2.unique().tolist())


def test_ids_are_sampled_among_shared_segments_and_disjoint_views_fall_back_to_whole_views():
    views = DetConViews(8, 3, n_masks=16)
    a, b = torch.zeros(8, 8, dtype=torch.int64), torch.zeros(8, 8, dtype=torch.int64)
    a[:4], b[:, :4] = 1, 2  # a has {0, 1}, b has {0, 2}: only 0 is shared
    assert views.sample_ids(a, b).tolist() == [0] * 16
    assert views.sample_ids(a + 10, b).tolist() == [WHOLE_VIEW] * 16
    many = torch.arange(64).reshape(8, 8)
    torch.manual_seed(0)
    ids = views.sample_ids(many, many)
    assert len(set(ids.tolist())) == 16  # without replacement when there are enough


def test_views_have_no_batched_recipe():
    assert DetConViews(32, 3).batch is None
