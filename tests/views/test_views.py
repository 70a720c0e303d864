import torch

from selfsup.views import EvalTransform, SimCLRViews


def _image(channels: int = 1, size: int = 28) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (channels, size, size), dtype=torch.uint8)


def test_simclr_gives_two_different_normalised_views():
    torch.manual_seed(0)
    views = SimCLRViews(28, 1)(_image())
    assert len(views) == 2
    assert all(v.shape == (1, 28, 28) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])
    assert all(-1.0 <= v.min() and v.max() <= 1.0 for v in views)  # (x - 0.5) / 0.5


def test_rgb_recipe_and_resize_to_the_requested_size():
    views = SimCLRViews(32, 3, n_views=3)(_image(3, 50))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 3


def test_blur_only_from_64_pixels():
    def has_blur(size):
        return "GaussianBlur" in repr(SimCLRViews(size, 3).transform)
    assert not has_blur(32) and has_blur(64)


def test_one_channel_recipe_has_no_colour_only_operations():
    text = repr(SimCLRViews(28, 1).transform)
    assert "Grayscale" not in text and "saturation" not in text and "hue" not in text


def test_eval_transform_is_deterministic_and_centre_crops():
    transform = EvalTransform(16, 3)
    image = _image(3, 40)[:, :, :32]  # 40 x 32: shorter side 32 -> 16, then a 16 x 16 centre crop
    out = transform(image)
    assert out.shape == (3, 16, 16)
    torch.testing.assert_close(out, transform(image))


def test_batched_views_draw_parameters_per_sample():
    torch.manual_seed(0)
    same = _image(1, 28).expand(16, -1, -1, -1)  # sixteen copies of one image
    views = SimCLRViews(28, 1, min_scale=0.2).batch(same)
    assert len(views) == 2 and all(v.shape == (16, 1, 28, 28) and v.dtype == torch.float32 for v in views)
    flat = views[0].flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == 16  # every copy got its own crop/jitter
    assert not torch.equal(views[0], views[1])


def test_batched_views_match_the_per_sample_recipe_in_distribution():
    from selfsup.data import load_builtin

    images = load_builtin("fashion-mnist").images[:1024]
    recipe = SimCLRViews(28, 1, min_scale=0.2)
    torch.manual_seed(0)
    batched = recipe.batch(images)[0]
    per_sample = torch.stack([recipe(im)[0] for im in images])
    # per-image means spread ~0.4, so their average over 1024 images has a standard error ~0.013
    for stat in (lambda v: v.mean(dim=(1, 2, 3)), lambda v: v.std(dim=(1, 2, 3))):
        assert abs(stat(batched).mean() - stat(per_sample).mean()) < 0.06
        assert abs(stat(batched).std() - stat(per_sample).std()) < 0.06
    # the same fraction of pixels stays background-dark after the crop (scale distribution)
    dark = lambda v: (v < -0.9).float().mean()  # noqa: E731
    assert abs(dark(batched) - dark(per_sample)) < 0.05
