import pytest
import torch

from selfsup.views.byol import BYOLViews


def _pixels(views: torch.Tensor, recipe: BYOLViews) -> torch.Tensor:
    """Undo the normalisation: (B, C, S, S) back to [0, 1]."""
    mean, std = torch.tensor(recipe.mean).view(1, -1, 1, 1), torch.tensor(recipe.std).view(1, -1, 1, 1)
    return views * std + mean


def _both_paths(recipe: BYOLViews, image: torch.Tensor, n_batched: int, n_single: int) -> dict:
    """{path: [view 1 (n, C, S, S), view 2]} from the batched path and from the per-sample path."""
    torch.manual_seed(0)
    batched = recipe.batch(image.expand(n_batched, -1, -1, -1))
    singles = [recipe(image) for _ in range(n_single)]
    return {"batched": batched, "per-sample": [torch.stack([s[v] for s in singles]) for v in range(2)]}


def test_two_views_of_the_requested_size_and_type():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8)
    recipe = BYOLViews(32, 3)
    views = recipe(image)
    assert len(views) == 2 and all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in views)
    batched = recipe.batch(image.expand(4, -1, -1, -1))
    assert len(batched) == 2 and all(v.shape == (4, 3, 32, 32) and v.dtype == torch.float32 for v in batched)
    assert len({tuple(row.tolist()) for row in batched[0].flatten(1)}) == 4  # per-sample parameters


def test_one_channel_recipe_has_no_colour_only_operations_and_blur_only_from_64_pixels():
    recipe = BYOLViews(28, 1)
    for transform in recipe.transforms:
        text = repr(transform)
        assert "Grayscale" not in text and "saturation" not in text and "hue" not in text
        assert "GaussianBlur" not in text
    # solarisation only where table 6 gives it a chance: view 2 (p 0.2), on both paths
    assert ["RandomSolarize" in repr(t) for t in recipe.transforms] == [False, True]
    assert ["RandomSolarize" in repr(t) for t in recipe.batch_transforms] == [False, True]
    assert all("GaussianBlur" in repr(t) for t in BYOLViews(64, 3).transforms)
    assert all("GaussianBlur" in repr(t) for t in BYOLViews(64, 3).batch_transforms)


@pytest.mark.parametrize("channels", [1, 3])
def test_solarisation_probability_per_view_on_both_paths(channels):
    # A white image stays in [0.6, 1] under crop, flip, jitter (brightness 0.6-1.4, clamped), grayscale and
    # blur; solarisation maps it to [0, 0.4]. So "some pixel below 0.5" counts the solarised views.
    recipe = BYOLViews(28, channels)
    white = torch.full((channels, 28, 28), 255, dtype=torch.uint8)
    for path, views in _both_paths(recipe, white, 1000, 400).items():
        rates = [(_pixels(v, recipe).amin(dim=(1, 2, 3)) < 0.5).float().mean().item() for v in views]
        assert rates[0] == 0.0, path  # view 1: p 0.0
        assert abs(rates[1] - 0.2) < 0.06, (path, rates)  # view 2: p 0.2 (std error 0.02 at n=400)


def test_blur_probability_per_view_matches_between_paths():
    # Noise is sharp: neighbour differences ~2.2 std; a blur with σ > ~0.3 pulls that below 2, which
    # no other operation does at crop scale 1. Expected: view 1 ~0.9 (p 1, most σ in 0.1-2 count), view 2 ~0.1.
    recipe = BYOLViews(64, 3, min_scale=1.0, solarize_p=(0.0, 0.0))
    noise = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def blurred(v):
        d = (v[..., :, 1:] - v[..., :, :-1]).abs().mean(dim=(1, 2, 3)) + (v[..., 1:, :] - v[..., :-1, :]).abs().mean(
            dim=(1, 2, 3))
        return (d / v.std(dim=(1, 2, 3)) < 2.0).float().mean().item()

    # the per-sample path is slow at 64 px: 150 draws, std error of a rate difference ~0.027
    rates = {path: [blurred(v) for v in views] for path, views in _both_paths(recipe, noise, 600, 150).items()}
    for path, (view1, view2) in rates.items():
        assert view1 > 0.7 and view2 < 0.25, (path, view1, view2)
    for v in range(2):
        assert abs(rates["batched"][v] - rates["per-sample"][v]) < 0.1, rates


def test_batched_views_match_the_per_sample_recipe_in_distribution():
    from selfsup.data import load_builtin

    images = load_builtin("fashion-mnist").images[:1024]
    recipe = BYOLViews(28, 1)
    torch.manual_seed(0)
    batched = recipe.batch(images)
    per_sample = [torch.stack(views) for views in zip(*(recipe(im) for im in images))]
    # per-image means spread ~0.4, so their average over 1024 images has a standard error ~0.013
    for v in range(2):
        for stat in (lambda x: x.mean(dim=(1, 2, 3)), lambda x: x.std(dim=(1, 2, 3))):
            assert abs(stat(batched[v]).mean() - stat(per_sample[v]).mean()) < 0.06
            assert abs(stat(batched[v]).std() - stat(per_sample[v]).std()) < 0.06
        # the same fraction of pixels stays background-dark after the crop (scale distribution)
        dark = [(x < -0.9).float().mean() for x in (batched[v], per_sample[v])]
        assert abs(dark[0] - dark[1]) < 0.05
