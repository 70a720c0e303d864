import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.mocov3 import MoCoV3
from selfsup.nn import cosine_momentum
from selfsup.train.run import train
from selfsup.views.byol import BYOLViews
from tests.learning import knn_before_and_after

SMALL = dict(backbone="resnet10t", backbone_kwargs={"channels": [8, 8, 16, 16], "stem_width": 8},
             proj_hidden_dim=16, pred_hidden_dim=16, proj_dim=8)
VIT = dict(backbone="timm:vit_tiny_patch16_224", backbone_kwargs={"img_size": 28, "patch_size": 4, "depth": 2},
           proj_hidden_dim=16, pred_hidden_dim=16, proj_dim=8)
CLI = ["--backbone", "resnet10t", "--batch-size", "32", "--num-workers", "0", "--no-progress",
       "--set", "proj_hidden_dim=32", "--set", "pred_hidden_dim=32", "--set", "proj_dim=16",
       "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def reference_ctr(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """2τ · mean_i −log softmax_j(cos(q_i, k_j)/τ)[i], one loop per query."""
    losses = []
    for i in range(len(q)):
        sims = torch.stack([F.cosine_similarity(q[i], k[j], dim=0) for j in range(len(k))]) / tau
        losses.append(-(sims[i] - torch.logsumexp(sims, dim=0)))
    return 2 * tau * torch.stack(losses).mean()


def test_registry_lists_mocov3_with_resnet_defaults():
    assert "mocov3" in METHODS and "ICCV 2021" in METHODS["mocov3"].paper
    config = make_config("mocov3")
    assert (config.optimizer, config.lr, config.weight_decay, config.warmup_fraction) == ("lars", 0.6, 1e-6, 0.1)
    assert (config.temperature, config.ema_base, config.crop_min_scale) == (1.0, 0.99, 0.08)
    assert (config.proj_hidden_dim, config.proj_dim, config.proj_layers, config.pred_hidden_dim) == (4096, 256, 3, 4096)
    assert "1.5e-4" in MoCoV3.config_class.__doc__ and "0.2" in MoCoV3.config_class.__doc__  # ViT recipe


def test_heads_follow_the_paper():
    method = create("mocov3", in_chans=1, **SMALL)
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    norms = [m for m in method.projector if isinstance(m, nn.BatchNorm1d)]
    assert [lin.out_features for lin in linears] == [16, 16, 8] and len(norms) == 3  # BN after every layer
    assert norms[-1].weight is None  # last BN without affine
    assert [m.out_features for m in method.predictor if isinstance(m, nn.Linear)] == [16, 8]
    assert not isinstance(method.predictor[-1], nn.BatchNorm1d)
    assert isinstance(method.default_views(28, 1), BYOLViews)


def test_loss_is_the_symmetric_scaled_contrast_and_keys_get_no_gradient():
    torch.manual_seed(0)
    method = create("mocov3", in_chans=1, temperature=0.5, **SMALL)
    x1, x2 = torch.randn(6, 1, 16, 16), torch.randn(6, 1, 16, 16)
    loss = method.training_step([x1, x2])["loss"]
    q1 = method.predictor(method.projector(method.backbone(x1)))
    q2 = method.predictor(method.projector(method.backbone(x2)))
    with torch.no_grad():
        k1, k2 = method.momentum_encoder(x1), method.momentum_encoder(x2)
    torch.testing.assert_close(loss, reference_ctr(q1, k2, 0.5) + reference_ctr(q2, k1, 0.5))
    loss.backward()
    assert all(p.grad is not None for p in [*method.backbone.parameters(), *method.predictor.parameters()])
    assert all(p.grad is None and not p.requires_grad for p in method.momentum_encoder.parameters())


def test_after_step_moves_the_momentum_encoder_with_the_cosine_schedule():
    torch.manual_seed(0)
    method = create("mocov3", in_chans=1, ema_base=0.9, **SMALL)
    with torch.no_grad():  # stands in for an optimiser step
        for p in [*method.backbone.parameters(), *method.projector.parameters()]:
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in method.momentum_encoder.parameters()]
    method.after_step(3, 10)
    m = cosine_momentum(0.9, 3, 10)
    assert 0.9 < m < 1.0
    online = [*method.backbone.parameters(), *method.projector.parameters()]
    for xi, before, theta in zip(method.momentum_encoder.parameters(), old, online, strict=True):
        torch.testing.assert_close(xi, m * before + (1 - m) * theta)


def test_vit_backbone_with_a_frozen_random_patch_projection():
    torch.manual_seed(0)
    method = create("mocov3", in_chans=1, temperature=0.2, **VIT)
    assert method.backbone.num_features == 192
    frozen = method.backbone.patch_embed.proj.weight
    assert not frozen.requires_grad and not method.backbone.patch_embed.proj.bias.requires_grad
    before = frozen.clone()
    loss = method.training_step([torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28)])["loss"]
    loss.backward()
    assert frozen.grad is None and method.backbone.blocks[0].attn.qkv.weight.grad is not None
    method.after_step(1, 10)
    assert torch.equal(method.momentum_encoder[0].patch_embed.proj.weight, before)
    trainable = create("mocov3", in_chans=1, freeze_patch_embed=False, **VIT)
    assert trainable.backbone.patch_embed.proj.weight.requires_grad


def test_freezing_patches_needs_a_vit_and_resnets_train_everything():
    assert all(p.requires_grad for p in create("mocov3", in_chans=1, **SMALL).backbone.parameters())
    with pytest.raises(SelfsupError, match="freeze_patch_embed needs a ViT"):
        create("mocov3", in_chans=1, freeze_patch_embed=True, **SMALL)


def test_resume_restores_the_momentum_encoder(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train("mocov3", dict(data="digits", max_steps=2, batch_size=16, num_workers=0, **SMALL), out=str(out),
          progress=False)
    saved = read_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    restored = []
    step = MoCoV3.training_step

    def spy(self, views, indices=None):  # the method's state when training resumes
        if not restored:
            restored.append({k: v.clone() for k, v in self.state_dict().items()})
        return step(self, views, indices)

    monkeypatch.setattr(MoCoV3, "training_step", spy)
    train("mocov3", {"max_steps": 4}, out=str(out), resume=True, progress=False)
    names = [k for k in restored[0] if k.startswith("momentum_encoder.")]
    assert len(names) > 10
    for name in names:
        torch.testing.assert_close(restored[0][name], saved["method." + name], rtol=0, atol=0)
    # the momentum encoder trails the online one: it has moved, but is not a copy
    key, online = "method.momentum_encoder.1.0.weight", "method.projector.0.weight"
    assert not torch.equal(saved[key], saved[online])
    final = read_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert not torch.equal(final[key], saved[key])


def test_trains_from_the_cli_on_digits(tmp_path):
    assert main(["train", "mocov3", "--data", "digits", "--max-steps", "3", "--out", str(tmp_path), *CLI]) == 0
    checkpoint = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 3 and checkpoint["selfsup"]["method"] == "mocov3"


def test_trains_a_vit_from_the_cli(tmp_path):
    assert main(["train", "mocov3", "--data", "digits", "--max-steps", "2", "--out", str(tmp_path),
                 "--backbone", "timm:vit_tiny_patch16_224", "--batch-size", "16", "--no-progress",
                 "--set", "backbone_kwargs={img_size: 8, patch_size: 2, depth: 2}", "--set", "proj_hidden_dim=32",
                 "--set", "pred_hidden_dim=32", "--set", "proj_dim=16", "--set", "temperature=0.2"]) == 0
    state = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert torch.equal(state["method.backbone.patch_embed.proj.weight"],
                       state["method.momentum_encoder.0.patch_embed.proj.weight"])


def test_trains_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    assert main(["train", "mocov3", "--data", str(tmp_path / "images"), "--image-size", "16", "--max-steps", "2",
                 "--out", str(tmp_path / "run"), *CLI]) == 0
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["selfsup"]["in_chans"] == 3


@pytest.mark.slow
def test_mocov3_resnet_beats_random_init_on_fashion_mnist(tmp_path):
    # momentum 0.9 -> 1: at the paper's 0.99 the keys of a 150-step run trail the queries too far (kNN 0.648, below
    # random init 0.655); CPU-sized heads; τ 0.2 as for ViTs; milder crops as in the SimCLR test. 200 steps: at 150
    # the margin was +0.021 at 1 thread and +0.0185 at 2 (failed); at 200 it is +0.066 at 1 thread, +0.065 at 2
    # (0.721 / 0.720 against 0.655, measured 2026-12-01)
    random_init, pretrained = knn_before_and_after("mocov3", tmp_path, temperature=0.2, proj_hidden_dim=512,
                                                   pred_hidden_dim=512, proj_dim=128, crop_min_scale=0.4,
                                                   ema_base=0.9, max_steps=200)
    assert pretrained > random_init + 0.03
