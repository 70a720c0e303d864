"""The VQ-VAE tokenizer's loss (van den Oord et al. 2017, eq. 3) against a float64 reference written out by hand:
values, and the gradients of the encoder, decoder and codebook, including the straight-through estimator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from selfsup.document import VQVAE, TokenizerConfig, code_statistics, nearest_codes
from selfsup.errors import SelfsupError


def reference(x, A, a, W, w, codebook, beta):
    """Float64 numpy: encoder z_e = A x + a and decoder x_hat = W z_q + w (1x1 convolutions), nearest codes by a loop,
    the loss of eq. 3 with means, and its gradients: the straight-through estimator copies dL/dz_q onto z_e."""
    B, _, H, Wd = x.shape
    z_e = np.einsum("dc,bchw->bdhw", A, x) + a[None, :, None, None]
    codes = np.zeros((B, H, Wd), dtype=np.int64)
    for b, i, j in itertools.product(range(B), range(H), range(Wd)):
        distances = [((z_e[b, :, i, j] - codebook[k]) ** 2).sum() for k in range(len(codebook))]
        codes[b, i, j] = int(np.argmin(distances))
    e = codebook[codes].transpose(0, 3, 1, 2)  # (B, D, H, W)
    z_q = e  # the forward value of the straight-through z_q
    x_hat = np.einsum("cd,bdhw->bchw", W, z_q) + w[None, :, None, None]
    n_x, n_z = x.size, z_e.size
    r = x_hat - x
    recon = (r ** 2).sum() / n_x
    codebook_term = ((e - z_e) ** 2).sum() / n_z
    commit = ((z_e - e) ** 2).sum() / n_z
    loss = recon + codebook_term + beta * commit
    d_xhat = 2 * r / n_x  # (B, C, H, W)
    d_W = np.einsum("bchw,bdhw->cd", d_xhat, z_q)
    d_w = d_xhat.sum((0, 2, 3))
    d_ze = np.einsum("cd,bchw->bdhw", W, d_xhat) + beta * 2 * (z_e - e) / n_z  # straight-through + commitment
    d_A = np.einsum("bdhw,bchw->dc", d_ze, x)
    d_a = d_ze.sum((0, 2, 3))
    d_codebook = np.zeros_like(codebook)
    for b, i, j in itertools.product(range(B), range(H), range(Wd)):
        d_codebook[codes[b, i, j]] += 2 * (e[b, :, i, j] - z_e[b, :, i, j]) / n_z
    return {"loss": loss, "recon": recon, "codebook": codebook_term, "commit": commit, "codes": codes,
            "A": d_A, "a": d_a, "W": d_W, "w": d_w, "book": d_codebook}


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_loss_and_gradients_match_float64_reference(beta):
    torch.manual_seed(0)
    C, D, K = 2, 3, 5
    model = VQVAE(TokenizerConfig(patch=2, codes=K, dim=D, width=8, beta=beta, image_size=4, channels=C,
                                  encoder="conv"))
    # 1x1 convolutions as encoder and decoder: the whole forward pass has a closed form
    model.encoder, model.decoder = nn.Conv2d(C, D, 1), nn.Conv2d(D, C, 1)
    model.initialised.fill_(True)  # keep the random codebook (no data-dependent initialisation)
    model.train()
    x = torch.rand(2, C, 3, 4)
    out = model(x)
    out["loss"].backward()
    f64 = {name: t.detach().double().numpy() for name, t in
           (("x", x), ("A", model.encoder.weight[:, :, 0, 0]), ("a", model.encoder.bias),
            ("W", model.decoder.weight[:, :, 0, 0]), ("w", model.decoder.bias), ("book", model.codebook))}
    ref = reference(f64["x"], f64["A"], f64["a"], f64["W"], f64["w"], f64["book"], beta)
    assert np.array_equal(out["codes"].numpy(), ref["codes"])
    assert len(np.unique(ref["codes"])) > 1  # several codes in use: the codebook gradient is not trivial
    for key in ("loss", "recon", "codebook", "commit"):
        assert float(out[key].detach()) == pytest.approx(ref[key], rel=1e-5, abs=1e-9)
    grads = {"A": model.encoder.weight.grad[:, :, 0, 0], "a": model.encoder.bias.grad,
             "W": model.decoder.weight.grad[:, :, 0, 0], "w": model.decoder.bias.grad, "book": model.codebook.grad}
    for key, grad in grads.items():
        np.testing.assert_allclose(grad.double().numpy(), ref[key], rtol=1e-4, atol=1e-7, err_msg=key)


def test_encoder_gets_reconstruction_gradient_only_through_straight_through():
    """With beta = 0 the encoder's only gradient is the decoder's, copied through z_q (no path through argmin)."""
    torch.manual_seed(1)
    model = VQVAE(TokenizerConfig(patch=2, codes=4, dim=2, width=8, beta=0.0, image_size=4, channels=1, encoder="conv"))
    model.encoder, model.decoder = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)
    model.initialised.fill_(True)
    x = torch.rand(1, 1, 2, 2)
    model(x)["recon"].backward()
    assert model.encoder.weight.grad.abs().sum() > 0  # straight-through reached the encoder
    assert model.codebook.grad is None or model.codebook.grad.abs().sum() == 0  # recon does not move the codes


def test_nearest_codes_is_the_argmin_of_squared_distances():
    z, book = torch.randn(50, 6), torch.randn(17, 6)
    brute = torch.stack([((book - v) ** 2).sum(1).argmin() for v in z])
    assert torch.equal(nearest_codes(z, book), brute)


@pytest.mark.parametrize("patch, size", [(16, 224), (8, 64), (32, 64)])
def test_one_code_per_vit_patch(patch, size):
    model = VQVAE(TokenizerConfig(patch=patch, codes=16, dim=8, width=16, image_size=size)).eval()
    x = torch.rand(2, 1, size, size)
    codes = model.tokenize(x)
    assert codes.shape == (2, size // patch, size // patch) and codes.dtype == torch.int64
    assert model(x)["x_hat"].shape == x.shape and model.decode_codes(codes).shape == x.shape


def test_bad_configs_are_one_line_errors():
    with pytest.raises(SelfsupError, match="not a power of 2"):
        VQVAE(TokenizerConfig(patch=12))
    with pytest.raises(SelfsupError, match="not a multiple of the patch"):
        VQVAE(TokenizerConfig(image_size=100))
    with pytest.raises(SelfsupError, match="codes >= 2"):
        VQVAE(TokenizerConfig(codes=1))


def test_first_batch_initialises_codebook_and_dead_codes_restart():
    torch.manual_seed(0)
    model = VQVAE(TokenizerConfig(patch=2, codes=8, dim=2, width=8, image_size=4, encoder="conv"))
    model.encoder, model.decoder = nn.Conv2d(1, 2, 1), nn.Conv2d(2, 1, 1)
    x = torch.rand(4, 1, 2, 2)
    model.train()
    z = model.encode(x).detach().permute(0, 2, 3, 1).reshape(-1, 2)
    model(x)
    # every code is one of the batch's encoder outputs
    assert all(torch.isclose(z, row).all(1).any() for row in model.codebook.detach())
    model.after_step()
    with torch.no_grad():
        model.codebook[3] = 100.0  # far from every encoder output: never chosen from now on
    for _ in range(model.RESTART_AFTER + 1):
        model(x)
        model.after_step()
    assert model.codebook[3].abs().max() < 100  # moved back onto an encoder output
    assert torch.isclose(model.encode(x).detach().permute(0, 2, 3, 1).reshape(-1, 2), model.codebook[3]).all(1).any()


def test_identical_patches_get_identical_codes_whatever_their_neighbours():
    """encoder "patch": a code is a function of its own patch's pixels, so a blank patch has one code on every page
    (the whole-page "conv" encoder's code of the same patch changes with the text around it)."""
    torch.manual_seed(0)
    page = (torch.rand(1, 1, 64, 64) > 0.5).float()  # random "text" everywhere
    page[..., 16:32, 16:32] = 1.0  # a blank patch at (1, 1) ...
    page[..., 32:48, 48:64] = 1.0  # ... and at (2, 3), with other neighbours
    page[..., 0:16, 0:16] = page[..., 48:64, 32:48]  # a text patch copied from (3, 2) to (0, 0)
    local = VQVAE(TokenizerConfig(patch=16, codes=64, dim=8, width=16, image_size=64)).eval()
    z = local.encode(page)  # (1, D, 4, 4)
    assert torch.equal(z[..., 1, 1], z[..., 2, 3]) and torch.equal(z[..., 0, 0], z[..., 3, 2])
    codes = local.tokenize(page)
    assert codes[0, 1, 1] == codes[0, 2, 3] and codes[0, 0, 0] == codes[0, 3, 2]
    alone = local.encode(page[..., 16:32, 16:32])  # the patch as a page of its own: the same vector
    torch.testing.assert_close(alone[..., 0, 0], z[..., 1, 1])
    torch.manual_seed(0)
    whole = VQVAE(TokenizerConfig(patch=16, codes=64, dim=8, width=16, image_size=64, encoder="conv")).eval()
    zc = whole.encode(page)
    assert not torch.allclose(zc[..., 1, 1], zc[..., 2, 3])  # why "patch" is the default: neighbours leak in


def test_dead_codes_never_restart_on_copies_of_a_live_code():
    """k-means++-style restarts: an encoder output equal to a live code (a blank patch) has probability 0."""
    torch.manual_seed(0)
    model = VQVAE(TokenizerConfig(patch=2, codes=4, dim=2, width=8, image_size=4, encoder="conv"))
    model.initialised.fill_(True)
    with torch.no_grad():
        model.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [50.0, 50.0], [60.0, 60.0]]))
    model.last_used.copy_(torch.tensor([0, 0, -100, -100]))  # codes 2 and 3 long unused
    z = torch.zeros(1, 2, 4, 4)
    z[0, :, 0, 0] = torch.tensor([5.0, 5.0])  # the one output unlike the live codes 0 and 1
    z[0, 0, 0, 1] = 1.0  # a copy of code 1
    model._restart_dead(z, torch.tensor([16.0, 1.0, 0.0, 0.0]))
    assert torch.equal(model.codebook[2].detach(), torch.tensor([5.0, 5.0]))  # the only candidate
    assert torch.equal(model.codebook[3].detach(), torch.tensor([60.0, 60.0]))  # no second candidate: stays, retried
    assert model.last_used[2] == model.step and model.last_used[3] == -100


def test_code_statistics_on_one_basis():
    codes = torch.tensor([[[0, 0], [1, 2]], [[0, 0], [0, 3]]])  # 8 codes: 0 five times, 1, 2, 3 once each
    pages = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    pages[0, 0, 2:, 0:2] = torch.tensor([[0, 255], [0, 0]], dtype=torch.uint8)  # patch (1, 0) of page 0 not blank
    stats = code_statistics(codes, pages)
    p = np.array([5, 1, 1, 1]) / 8
    entropy = -(p * np.log(p)).sum()
    assert stats["codes_used"] == 4 and stats["code_entropy_nats"] == pytest.approx(entropy, abs=1e-4)
    assert stats["code_perplexity"] == pytest.approx(np.exp(entropy), abs=0.01)
    assert stats["blank_share"] == pytest.approx(7 / 8) and stats["blank_codes"] == 3  # codes 0, 2, 3 on blanks
