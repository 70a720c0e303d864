
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from selfsup.checkpoints import load_exported, load_method, read_checkpoint, step_path
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.losses.dino import DINOLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.dino import DINO, teacher_temperature
from selfsup.nn import cosine_momentum, feature_map
from selfsup.train.optim import create_optimizer
from selfsup.views.multicrop import MultiCropViews
from tests.resume_check import resumed_like_uninterrupted

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "proj_hidden_dim": 32,
         "proj_dim": 16, "num_prototypes": 20, "n_local_crops": 2}
TINY_VIT = {"backbone": "timm:vit_tiny_patch16_224", "proj_hidden_dim": 32, "proj_dim": 16, "num_prototypes": 20,
            "n_local_crops": 2, "local_crop_size": 8, "backbone_kwargs": {
                "img_size": 16, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2, "dynamic_img_size": True}}
CLI_SMALL = ["--backbone", "resnet10t", "--num-workers", "0", "--no-progress",
             "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "num_prototypes=24",
             "--set", "n_local_crops=2", "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}"]


def _views(B: int = 6, size: int = 28, local: int = 12, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(B, 1, size, size, generator=g) for _ in range(2)]
            + [torch.randn(B, 1, local, local, generator=g) for _ in range(2)])


def _perturb_teacher(method: DINO, scale: float = 0.05) -> None:
    """A teacher that differs from the student, as after some steps."""
    with torch.no_grad():
        for p in [*method.teacher_backbone.parameters(), *method.teacher_head.parameters(),
                  *method.teacher_prototypes.parameters()]:
            p.add_(scale * torch.randn_like(p))


def test_registry_lists_dino_with_paper_defaults():
    assert METHODS["dino"] is DINO and "ICCV 2021" in DINO.paper
    assert "4096 prototypes" in DINO.deviations and "gradient clipping" in DINO.deviations
    c = make_config("dino")
    assert (c.optimizer, c.lr, c.weight_decay, c.momentum, c.warmup_fraction) == ("adamw", 0.0005, 0.04, 0.9, 0.1)
    assert (c.proj_hidden_dim, c.proj_dim, c.head_bn, c.num_prototypes) == (2048, 256, False, 4096)
    assert (c.student_temperature, c.warmup_teacher_temperature, c.teacher_temperature) == (0.1, 0.04, 0.07)
    assert (c.teacher_temperature_warmup_fraction, c.center_momentum, c.ema_base) == (0.3, 0.9, 0.996)
    assert (c.freeze_prototypes_epochs, c.n_local_crops, c.global_min_scale) == (1.0, 8, 0.4)
    assert (c.local_min_scale, c.local_max_scale) == (0.05, 0.4)
    views = create("dino", in_chans=1, **{**SMALL, "n_local_crops": 8}).default_views(28, 1)
    assert isinstance(views, MultiCropViews) and (views.n_global, views.n_local, views.local_size) == (2, 8, 12)


def test_head_prototypes_and_frozen_teacher_have_the_paper_shape():
    method = create("dino", in_chans=1, backbone="resnet10t", num_prototypes=64)
    D = method.backbone.num_features
    assert [type(m) for m in method.head] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]  # no BN
    assert [(m.in_features, m.out_features) for m in method.head if isinstance(m, nn.Linear)] == [
        (D, 2048), (2048, 2048), (2048, 256)]
    W = method.prototypes.weight  # weight-normalised with the norm fixed to 1
    assert W.shape == (64, 256)
    torch.testing.assert_close(W.norm(dim=1), torch.ones(64))
    norm = method.prototypes.parametrizations.weight.original0
    assert not norm.requires_grad
    student = [*method.backbone.parameters(), *method.head.parameters(), *method.prototypes.parameters()]
    teacher = [*method.teacher_backbone.parameters(), *method.teacher_head.parameters(),
               *method.teacher_prototypes.parameters()]
    assert len(student) == len(teacher)
    for xi, theta in zip(teacher, student):
        assert torch.equal(xi, theta) and not xi.requires_grad
    optimised = {id(p) for g in create_optimizer(method, "adamw", 1e-3, 0.04, 0.9).param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in [*teacher, norm])
    assert id(method.prototypes.parametrizations.weight.original1) in optimised
    bn = create("dino", in_chans=1, backbone="resnet10t", head_bn=True)
    assert [type(m) for m in bn.head][:3] == [nn.Linear, nn.BatchNorm1d, nn.GELU]


def test_training_step_is_the_dino_loss_and_only_the_student_learns():
    torch.manual_seed(0)
    method = create("dino", in_chans=1, **SMALL)
    _perturb_teacher(method)
    method.criterion.center.copy_(0.1 * torch.randn(1, 20))
    method.tau_t.fill_(0.055)
    views = _views()
    # in eval mode BN is per sample, so the crops batched by size equal crops one by one; the centre stays
    method.eval()
    loss = method.training_step(views)["loss"]
    s = [F.normalize(method.head(method.backbone(v)), dim=1) @ method.prototypes.weight.T for v in views]
    t = [F.normalize(method.teacher_head(method.teacher_backbone(v)), dim=1) @ method.teacher_prototypes.weight.T
         for v in views[:2]]
    criterion = DINOLoss(20, 0.1).eval()
    criterion.center.copy_(method.criterion.center)
    torch.testing.assert_close(loss, criterion(s, t, 0.055))
    # training mode: gradients reach the student only, and the centre moves toward the teacher's batch mean
    method.train()
    center = method.criterion.center.clone()
    out = method.training_step(views)
    out["loss"].backward()
    teacher_outputs = torch.cat(method.teacher(views[:2]))
    torch.testing.assert_close(method.criterion.center, 0.9 * center + 0.1 * teacher_outputs.mean(0, keepdim=True))
    assert all(p.grad is not None for p in [*method.backbone.parameters(), *method.head.parameters()])
    assert method.prototypes.parametrizations.weight.original1.grad.abs().max() > 0  # not frozen: no prepare()
    assert all(p.grad is None for m in (method.teacher_backbone, method.teacher_head, method.teacher_prototypes)
               for p in m.parameters())
    assert 0 <= out["teacher_entropy"].item() <= np.log(20) and out["tau_t"].item() == pytest.approx(0.055)


def test_prototypes_are_frozen_for_the_first_epoch_then_train():
    torch.manual_seed(0)
    method = create("dino", in_chans=1, **SMALL)
    method.prepare(num_samples=12, steps_per_epoch=2)  # frozen for steps 0 and 1
    opt = create_optimizer(method, "adamw", lr=0.01, weight_decay=0.1, momentum=0.9)
    start = method.prototypes.weight.detach().clone()
    head = method.head[0].weight.detach().clone()
    history = []
    for step in range(4):
        opt.zero_grad()
        method.training_step(_views(seed=step))["loss"].backward()
        v_grad = method.prototypes.parametrizations.weight.original1.grad
        assert (v_grad.abs().max() == 0) == (step < 2)  # a zero gradient while frozen (DDP-safe), then a real one
        opt.step()
        method.after_step(step + 1, 4)
        history.append(method.prototypes.weight.detach().clone())
        assert int(method.step) == step + 1
    for W in history[:2]:  # weight decay only rescales v, which W = v / ||v|| undoes
        torch.testing.assert_close(W, start, rtol=0, atol=1e-6)
    assert (history[2] - start).abs().max() > 1e-4 and (history[3] - history[2]).abs().max() > 1e-4
    assert (method.head[0].weight - head).abs().max() > 1e-4  # the rest trained meanwhile
    torch.testing.assert_close(history[3].norm(dim=1), torch.ones(20))


def test_teacher_temperature_warms_up_linearly_over_its_share_of_the_run():
    schedule = [teacher_temperature(k, 100, 0.04, 0.07, 0.3) for k in (0, 15, 30, 31, 100)]
    assert schedule == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.0) == 0.07  # no warm-up


def test_after_step_moves_the_teacher_by_the_cosine_momentum_and_advances_tau_t():
    torch.manual_seed(1)
    method = create("dino", in_chans=1, **SMALL, ema_base=0.9)
    assert method.tau_t.item() == pytest.approx(0.04) and method.ema.item() == pytest.approx(0.9)
    students = [method.backbone, method.head, method.prototypes]
    teachers = [method.teacher_backbone, method.teacher_head, method.teacher_prototypes]
    with torch.no_grad():
        for p in [p for m in students for p in m.parameters() if p.requires_grad]:
            p.add_(torch.randn_like(p))
    online = [p.clone() for m in students for p in m.parameters()]
    before = [p.clone() for m in teachers for p in m.parameters()]
    method.after_step(25, 100)
    lam = cosine_momentum(0.9, 25, 100)
    after = [p for m in teachers for p in m.parameters()]
    for xi, old, theta in zip(after, before, online, strict=True):
        torch.testing.assert_close(xi, lam * old + (1 - lam) * theta)  # θt <- λ θt + (1 - λ) θs
    torch.testing.assert_close(method.teacher_prototypes.weight.norm(dim=1), torch.ones(20))
    assert method.ema.item() == pytest.approx(lam) and int(method.step) == 25
    assert method.tau_t.item() == pytest.approx(0.04 + 0.03 * 25 / 30)


def test_evaluation_and_export_see_the_teacher_on_a_resnet_and_a_vit():
    torch.manual_seed(0)
    for options, size, local in ((SMALL, 28, 12), (TINY_VIT, 16, 8)):
        method = create("dino", in_chans=1, **options)
        _perturb_teacher(method)
        method.training_step(_views(size=size, local=local))["loss"].backward()
        method.eval()
        x = torch.randn(3, 1, size, size)
        assert method.encoder() is method.teacher_backbone
        torch.testing.assert_close(method.embed(x), method.teacher_backbone(x))
        assert not torch.allclose(method.embed(x), method.backbone(x))
        torch.testing.assert_close(method.dense_features(x), feature_map(method.teacher_backbone, x))
    assert method.dense_features(x).shape == (3, 32, 4, 4)  # the ViT's 4x4 patch tokens
    fixed = create("dino", in_chans=1, **{**TINY_VIT, "backbone_kwargs": {**TINY_VIT["backbone_kwargs"],
                                                                          "dynamic_img_size": False}})
    with pytest.raises(SelfsupError, match="dynamic_img_size"):
        fixed.default_views(16, 1)


def test_cli_trains_on_fashion_mnist_freezes_the_first_epoch_resumes_exactly_and_exports(tmp_path):
    # 32 images at batch 16: 2 steps per epoch, so the prototypes are frozen for steps 1-2 and train in 3-4
    base = ["--data", "fashion-mnist", "--limit-samples", "32", "--batch-size", "16", *CLI_SMALL, "--set", "lr=0.1",
            "--recipe", "paper"]  # the paper's freeze of the whole first epoch
    assert main(["train", "dino", *base, "--max-steps", "4", "--checkpoint-every", "1", "--keep-last", "4",
                 "--out", str(tmp_path / "full")]) == 0
    folder = tmp_path / "full" / "checkpoints"
    v = "method.prototypes.parametrizations.weight.original1"  # W = v / ||v||
    W = {k: F.normalize(read_checkpoint(step_path(folder, k))["state_dict"][v], dim=1) for k in (1, 2, 3)}
    torch.testing.assert_close(W[2], W[1], rtol=0, atol=1e-6)
    assert (W[3] - W[2]).abs().max() > 1e-3
    full, resumed = resumed_like_uninterrupted("dino", tmp_path / "full")
    assert resumed["global_step"] == full["global_step"] == 4 and int(full["state_dict"]["method.step"]) == 4
    assert full["state_dict"]["method.criterion.center"].abs().max() > 0
    assert main(["export", "--checkpoint", str(folder / "last.ckpt"), "--out", str(tmp_path / "teacher.safetensors")]) == 0
    method, _ = load_method(folder / "last.ckpt")
    images = method.eval_batch([torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8) for _ in range(3)])
    torch.testing.assert_close(load_exported(tmp_path / "teacher.safetensors").eval()(images),
                               method.eval().teacher_backbone(images))


def test_cli_trains_a_vit_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(12):  # varying sizes: views made per sample in the loader
        side = 18 + i % 4
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    vit = "{img_size: 16, patch_size: 4, depth: 1, embed_dim: 32, num_heads: 2, dynamic_img_size: true}"
    assert main(["train", "dino", "--data", str(tmp_path / "images"), "--image-size", "16", "--max-steps", "2",
                 "--batch-size", "6", "--num-workers", "0", "--no-progress", "--out", str(tmp_path / "run"),
                 "--backbone", "timm:vit_tiny_patch16_224", "--set", f"backbone_kwargs={vit}",
                 "--set", "local_crop_size=8", "--set", "n_local_crops=2", "--set", "num_prototypes=24",
                 "--set", "proj_hidden_dim=32", "--set", "proj_dim=16"]) == 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["selfsup"]["in_chans"] == 3


def _teacher_giving(logits_of: "callable"):
    """A DINO.teacher replacement: the teacher's logits (B, K) made by `logits_of(B, K)` for each global crop."""
    def teacher(self, global_crops):
        return [logits_of(len(x), self.config.num_prototypes) for x in global_crops]
    return teacher


def test_the_teachers_entropy_tells_both_collapses_and_stays_quiet_on_a_healthy_teacher(monkeypatch):
    torch.manual_seed(0)
    method = create("dino", in_chans=1, **SMALL)
    assert method.collapse_warning(method.training_step(_views())) is None  # random init: spread, not uniform
    # no centring and one prototype dominating every image: the entropy of the batch's mean output is ~0
    monkeypatch.setattr(DINO, "teacher", _teacher_giving(lambda B, K: torch.eye(K)[0].expand(B, K) * 10))
    logged = method.training_step(_views())
    assert float(logged["teacher_marginal_entropy"]) < 0.01
    assert "every image on the same prototypes" in method.collapse_warning(logged)
    # equal logits for every prototype: each image's P_t is uniform, H = log K
    monkeypatch.setattr(DINO, "teacher", _teacher_giving(lambda B, K: torch.zeros(B, K)))
    method.criterion.center.zero_()  # the step above moved the centre towards prototype 0
    logged = method.training_step(_views())
    assert float(logged["teacher_entropy"]) == pytest.approx(np.log(20), abs=1e-4)
    assert "the teacher's output is uniform" in method.collapse_warning(logged)


def test_a_run_whose_teacher_collapses_prints_one_warning(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(DINO, "teacher", _teacher_giving(lambda B, K: torch.eye(K)[0].expand(B, K) * 10))
    assert main(["train", "dino", "--data", "fashion-mnist", "--limit-samples", "32", "--batch-size", "16",
                 *CLI_SMALL, "--max-steps", "4", "--set", "monitor_every=2", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: dino at step 2: the teacher puts every image on the same prototypes") == 1, err
