"""SparK: the per-cell loss against a float64 loop, the sparse encoder (no masked pixel reaches a visible feature,
BN over visible positions), the plain backbone given back, and CLI runs (Fashion-MNIST with resume, a folder)."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.reconstruction import masked_mse, normalize_patches
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.spark import cell_normalized, masked_cell_mse
from selfsup.nn import create_backbone, stage_features
from selfsup.nn.sparse import SparseBatchNorm2d, SparseMask, mask_at, masked_batch_norm, sparse_forward
from selfsup.nn.vit import patchify
from selfsup.views.crop_flip import CropFlipViews
from tests.methods.test_barlow_twins import write_images
from tests.resume_check import resumed_like_uninterrupted

NARROW = {"channels": [8, 16, 32, 64], "stem_width": 8}
SMALL = dict(backbone="resnet18", small_stem=True, backbone_kwargs=NARROW)  # 4 x 4 grid of 8 px cells at 28 px
CLI = ["--backbone", "resnet18", "--small-stem", "--batch-size", "16", "--num-workers", "0", "--no-progress",
       "--set", "backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}"]


def test_registry_has_the_paper_defaults():
    config = make_config("spark")
    assert (config.mask_ratio, config.lr, config.weight_decay, config.warmup_fraction) == (0.6, 1e-4, 0.04, 0.025)
    assert (config.optimizer, config.norm_pix_loss, config.crop_min_scale) == ("adamw", True, 0.67)
    assert "stride 8" in METHODS["spark"].deviations and METHODS["spark"].paper.startswith("Tian")
    method = create("spark", in_chans=1, **SMALL)
    assert method.levels == [0, 1, 2, 3] and method.cell == 8 and method.grid(28) == (4, 4)
    assert method.decoder.projs[-1].out_channels == 64 // 4  # a quarter of the last stage, as 512 for 2048
    assert isinstance(method.default_views(28, 1), CropFlipViews)


def reference_loss(x: torch.Tensor, pred: torch.Tensor, hidden: torch.Tensor, cell: int) -> torch.Tensor:
    """A float64 loop: for every masked cell, its pixels and channels normalised by their own mean and unbiased
    variance (+1e-6), the mean squared error of the prediction there; the mean over masked cells."""
    terms = []
    for b, i, j in hidden.nonzero().tolist():
        rows, cols = slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell)
        patch, guess = x[b, :, rows, cols].reshape(-1), pred[b, :, rows, cols].reshape(-1)
        target = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
        terms.append(((guess - target) ** 2).mean())
    return torch.stack(terms).mean()


@pytest.mark.parametrize("side", [28, 16])  # 28 px: the last row and column of cells are cut to 4 px
def test_loss_equals_a_float64_loop_in_values_and_gradients(side):
    torch.manual_seed(0)
    x = torch.randn(3, 2, side, side, dtype=torch.float64)
    pred = torch.randn(3, 2, side, side, dtype=torch.float64, requires_grad=True)
    hidden = (torch.rand(3, 4, 4) < 0.6).double()
    hidden = hidden[:, : -(-side // 8), : -(-side // 8)]
    target, _, _ = cell_normalized(x, 8)
    loss = masked_cell_mse(pred, target, hidden, 8)
    (grad,) = torch.autograd.grad(loss, pred)
    pred_ref = pred.detach().clone().requires_grad_()
    expected = reference_loss(x, pred_ref, hidden, 8)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, pred_ref.grad, rtol=1e-10, atol=1e-12)
    if side % 8 == 0:  # whole cells: exactly the library's MAE loss with the cells as patches
        library = masked_mse(patchify(pred, 8), normalize_patches(patchify(x, 8)), hidden.flatten(1))
        torch.testing.assert_close(loss, library, rtol=1e-10, atol=1e-12)


def test_training_step_is_the_loss_of_the_reconstruction_and_everything_learns():
    torch.manual_seed(0)
    method = create("spark", in_chans=1, **SMALL)
    x = torch.randn(6, 1, 28, 28)
    torch.manual_seed(1)
    loss = method.training_step([x])["loss"]
    torch.manual_seed(1)  # the same masks again
    out = method.reconstruct(x)
    assert out["pred"].shape == x.shape and torch.equal(out["hidden"].sum((1, 2)), torch.full((6,), 10.0))  # of 16
    torch.testing.assert_close(loss, masked_cell_mse(out["pred"], cell_normalized(x, 8)[0], out["hidden"], 8))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())  # mask tokens included


def sparse_run(backbone: nn.Module, x: torch.Tensor, visible: torch.Tensor) -> tuple[list, list]:
    """(the 4 stages' maps, every conv / pool / norm output) of a sparse forward, in training mode."""
    masks, outputs = SparseMask(visible), []
    with sparse_forward(backbone, masks):  # recorders registered after the re-masking hooks: they see its result
        layers = [m for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, SparseBatchNorm2d))]
        handles = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in layers]
        features = stage_features(backbone, x * masks.at(x.shape[-2:]))
    for handle in handles:
        handle.remove()
    return features, outputs


@pytest.mark.parametrize("name, side, small_stem", [("resnet18", 28, True), ("torchvision:resnet18", 64, False),
                                                     ("convnext_atto", 64, False)])
def test_no_information_from_a_masked_cell_reaches_a_visible_cell(name, side, small_stem):
    torch.manual_seed(0)
    method = create("spark", in_chans=1, backbone=name, small_stem=small_stem)
    grid = method.grid(side)
    visible = method.sample_visible(4, grid, torch.Generator().manual_seed(0), "cpu")  # (B, 1, h, w)
    x = torch.randn(4, 1, side, side)
    hidden_pixels = 1 - mask_at(visible, (side, side))
    noisy = x + 5 * torch.randn_like(x) * hidden_pixels  # other content in every masked cell only
    clean, layers = sparse_run(method.backbone, x, visible)
    perturbed, _ = sparse_run(method.backbone, noisy, visible)
    for a, b in zip(clean, perturbed):  # every scale: visible features unchanged, masked cells empty
        keep = mask_at(visible, a.shape[-2:])
        assert torch.equal(a * keep, b * keep) and torch.all(a * (1 - keep) == 0)
    assert len(layers) > 10 and all(torch.all(o * (1 - mask_at(visible, o.shape[-2:])) == 0) for o in layers)
    x.requires_grad_()
    features, _ = sparse_run(method.backbone, x, visible)
    (features[-1] * mask_at(visible, grid)).sum().backward()
    assert torch.all(x.grad[hidden_pixels.bool()] == 0) and x.grad.abs().sum() > 0


def test_sparse_batch_norm_statistics_are_those_of_the_visible_positions():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    visible = (torch.rand(4, 1, 6, 6) < 0.5).float()
    x = (3 * torch.randn(4, 3, 6, 6) + 2) * visible  # zero where masked, as inside the sparse forward
    x.requires_grad_()
    y = masked_batch_norm(bn, x, visible)
    where = visible[:, 0].bool()  # (B, H, W)
    xv = x.detach().permute(0, 2, 3, 1)[where].double().requires_grad_()  # (n, C), the visible positions
    expected = F.batch_norm(xv, None, None, bn.weight.double(), bn.bias.double(), training=True, eps=bn.eps)
    torch.testing.assert_close(y.permute(0, 2, 3, 1)[where].double(), expected, rtol=1e-4, atol=1e-5)
    assert torch.all(y.permute(0, 2, 3, 1)[~where] == 0)
    torch.testing.assert_close(bn.running_mean, 0.1 * xv.detach().mean(0).float())
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * xv.detach().var(0).float())  # unbiased, as nn.BatchNorm2d
    g = torch.randn_like(y)
    y.backward(g)
    expected.backward(g.permute(0, 2, 3, 1)[where].double())
    torch.testing.assert_close(x.grad.permute(0, 2, 3, 1)[where].double(), xv.grad, rtol=1e-4, atol=1e-5)
    bn.eval()  # eval: the running statistics, as the plain layer, masked
    torch.testing.assert_close(masked_batch_norm(bn, x, visible), bn(x) * visible)


def test_with_nothing_masked_the_sparse_forward_is_the_plain_network():
    torch.manual_seed(0)
    plain = create_backbone("resnet18", in_chans=1, small_stem=True, **NARROW)
    sparse = create_backbone("resnet18", in_chans=1, small_stem=True, **NARROW)
    sparse.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 16, 16)
    features, _ = sparse_run(sparse, x, torch.ones(4, 1, 2, 2))
    torch.testing.assert_close(features, stage_features(plain, x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sparse.bn1.running_var, plain.bn1.running_var)


def test_the_encoder_is_the_plain_backbone():
    method = create("spark", in_chans=1, **SMALL)
    method.training_step([torch.randn(4, 1, 28, 28)])["loss"].backward()
    encoder = method.encoder()
    fresh = create_backbone("resnet18", in_chans=1, small_stem=True, **NARROW)
    assert encoder is method.backbone and type(encoder) is type(fresh)
    assert encoder.state_dict().keys() == fresh.state_dict().keys()
    assert not any(isinstance(m, SparseBatchNorm2d) for m in encoder.modules())
    assert [type(m) for m in encoder.modules()] == [type(m) for m in fresh.modules()]  # BatchNorm2d, not wrappers
    assert not any(m._forward_hooks for m in encoder.modules())
    assert method.embed(torch.randn(2, 1, 28, 28)).shape == (2, 64)


def test_bad_backbones_and_sizes_are_one_clear_line():
    vit = dict(backbone="timm:vit_tiny_patch16_224", backbone_kwargs={"img_size": 32, "patch_size": 4, "depth": 1})
    with pytest.raises(SelfsupError, match="spark needs a convnet.*use mae or simmim"):
        create("spark", in_chans=1, small_stem=False, **vit)
    with pytest.raises(SelfsupError, match="small_stem is only available.*--set small_stem=false"):
        create("spark", in_chans=1, **vit)
    method = create("spark", in_chans=1, backbone="resnet18", small_stem=False, backbone_kwargs=NARROW)
    with pytest.raises(SelfsupError, match="stride 32.* is 1 x 1.*--small-stem"):
        method.default_views(28, 1)
    with pytest.raises(SelfsupError, match="decoder_width 4 is halved 3 times"):
        create("spark", in_chans=1, decoder_width=4, **SMALL)


def test_trains_on_fashion_mnist_from_the_cli_and_resumes_exactly(tmp_path):
    base = ["--data", "fashion-mnist", "--limit-samples", "64", *CLI]
    assert main(["train", "spark", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    full, resumed = resumed_like_uninterrupted("spark", tmp_path / "full")
    assert resumed["global_step"] == full["global_step"] == 4
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "encoder.safetensors")]) == 0


def test_trains_on_an_image_folder(tmp_path):
    write_images(tmp_path / "images", 40, size=20)
    assert main(["train", "spark", "--data", str(tmp_path / "images"), "--image-size", "16", "--max-steps", "2",
                 "--out", str(tmp_path / "run"), *CLI]) == 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["selfsup"]["in_chans"] == 3
