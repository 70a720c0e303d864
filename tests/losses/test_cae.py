import torch

from selfsup.losses.cae import CAELoss


def naive_cae(pixels, pixel_targets, latents, latent_targets, weight):
    """CAE's L = ℓ_y + λ·ℓ_z with loops: ℓ_y the mean over masked patches of the mean squared error of the patch's
    values, ℓ_z the mean squared error over every (patch, channel) of the latents; the targets are constants."""
    B, m, P = pixels.shape
    D = latents.shape[-1]
    decoder, align = 0.0, 0.0
    for b in range(B):
        for j in range(m):
            decoder = decoder + sum((pixels[b, j, k] - pixel_targets[b, j, k].item()) ** 2 for k in range(P)) / P
            align = align + sum((latents[b, j, d] - latent_targets[b, j, d].item()) ** 2 for d in range(D))
    decoder, align = decoder / (B * m), align / (B * m * D)
    return decoder + weight * align, decoder, align


def _inputs(seed=0, B=3, m=4, P=5, D=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, m, k, dtype=torch.float64, generator=g, requires_grad=True) for k in (P, P, D, D)]


def test_matches_a_float64_loop_in_values_and_gradients():
    for weight in (2.0, 0.5):
        inputs = _inputs()
        ours = CAELoss(weight)(*inputs)
        reference = naive_cae(*inputs, weight)
        for a, b in zip(ours, reference, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        predictions = (inputs[0], inputs[2])
        for a, b in zip(torch.autograd.grad(ours[0], predictions), torch.autograd.grad(reference[0], predictions)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_paper_weights_the_alignment_twice_and_the_terms_are_their_own_mses():
    pixels, pixel_targets, latents, latent_targets = _inputs(seed=1)
    loss, decoder, align = CAELoss()(pixels, pixel_targets, latents, latent_targets)
    torch.testing.assert_close(loss, decoder + 2 * align)  # λ = 2 by default
    torch.testing.assert_close(decoder, torch.nn.functional.mse_loss(pixels, pixel_targets))
    torch.testing.assert_close(align, torch.nn.functional.mse_loss(latents, latent_targets))
    _, zero, _ = CAELoss()(pixel_targets, pixel_targets, latents, latent_targets)
    assert zero.item() == 0.0


def test_gradients_reach_the_predictions_only():
    inputs = _inputs(seed=2)
    grads = torch.autograd.grad(CAELoss()(*inputs)[0], inputs, allow_unused=True)
    assert grads[0].abs().sum() > 0 and grads[2].abs().sum() > 0
    assert grads[1] is None and grads[3] is None  # sg[·] on both targets
