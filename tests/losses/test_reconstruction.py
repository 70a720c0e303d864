import torch

from selfsup.losses.reconstruction import masked_l1, masked_mse, normalize_patches


def test_normalize_patches_matches_the_formula_per_patch():
    patches = torch.randn(2, 3, 5) * 4 + 1
    out = normalize_patches(patches)
    for b in range(2):
        for n in range(3):
            v = patches[b, n]
            mean = sum(v.tolist()) / 5
            var = sum((x - mean) ** 2 for x in v.tolist()) / 4  # unbiased
            torch.testing.assert_close(out[b, n], (v - mean) / (var + 1e-6) ** 0.5)


def test_masked_losses_average_over_hidden_patches_only():
    pred, target = torch.zeros(1, 3, 2, requires_grad=True), torch.tensor([[[1.0, 3.0], [2.0, 2.0], [10.0, 10.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third patch is visible: its error does not count
    assert masked_mse(pred, target, mask).item() == (((1 + 9) / 2) + ((4 + 4) / 2)) / 2
    loss = masked_l1(pred, target, mask)
    assert loss.item() == (((1 + 3) / 2) + ((2 + 2) / 2)) / 2
    loss.backward()
    assert torch.equal(pred.grad[0, 2], torch.zeros(2))  # no gradient from visible patches
    assert torch.equal(pred.grad[0, :2], torch.full((2, 2), -0.25))  # d/dpred |pred - t| / 4 values
