import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from timm.layers import DropPath

from selfsup.checkpoints import load_exported, load_method, read_checkpoint
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.moby import MoBY, swin_layout
from selfsup.nn import cosine_momentum
from selfsup.train.optim import create_optimizer
from selfsup.views.byol import BYOLViews
from tests.distributed import run_distributed
from tests.losses.test_moby import naive_moby

# A 16 px Swin: patch 2, window 4 (8 x 8 tokens in 2 x 2 windows, then one 4 x 4 window), 1 + 1 blocks, 16-d.
TINY_SWIN = {**swin_layout(16), "embed_dim": 16, "depths": [1, 1], "num_heads": [1, 2], "drop_path_rate": 0.0}
SMALL = {"backbone_kwargs": TINY_SWIN, "proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32, "queue_size": 32}
CLI = ["--batch-size", "8", "--num-workers", "0", "--no-progress", "--recipe", "paper", "--probe-every", "0",
       "--image-size", "16", "--set", "proj_hidden_dim=32", "--set", "proj_dim=8", "--set", "pred_hidden_dim=32",
       "--set", "queue_size=24",
       "--set", "backbone_kwargs={" + ", ".join(f"{k}: {v}" for k, v in {**TINY_SWIN, "drop_path_rate": 0.1}.items())
       + "}"]


def _views(B=6, S=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, 1, S, S, generator=g), torch.randn(B, 1, S, S, generator=g)]


def test_registry_lists_moby_with_paper_defaults_and_cpu_sizes_stated():
    assert METHODS["moby"] is MoBY and "Swin-T" in MoBY.deviations and "4096 -> 256" in MoBY.deviations
    c = make_config("moby")
    assert (c.optimizer, c.lr, c.weight_decay, c.warmup_fraction) == ("adamw", 5e-4, 0.05, 0.05)  # 1e-3 at batch 512
    assert (c.temperature, c.queue_size, c.ema_base, c.crop_min_scale) == (0.2, 4096, 0.99, 0.08)
    assert c.backbone == "timm:swin_tiny_patch4_window7_224"
    assert {k: c.backbone_kwargs[k] for k in ("img_size", "patch_size", "window_size")} == \
        {"img_size": 28, "patch_size": 2, "window_size": 7}


def test_out_of_the_box_it_is_a_swin_that_takes_fashion_mnist():
    method = create("moby", in_chans=1)
    assert type(method.backbone).__name__ == "SwinTransformer" and isinstance(method.default_views(28, 1), BYOLViews)
    x = torch.randn(2, 1, 28, 28)
    assert method.embed(x).shape == (2, 96) and method.dense_features(x).shape == (2, 96, 7, 7)
    assert method.encoder() is method.backbone  # the online network, as the paper evaluates
    assert [s.blocks[0].window_size for s in method.backbone.layers] == [(7, 7), (7, 7)]  # 14 x 14, then 7 x 7


@pytest.mark.parametrize("side, patch, window", [(16, 2, 4), (28, 2, 7), (32, 2, 8), (48, 3, 8), (56, 4, 7),
                                                 (64, 4, 8)])
def test_swin_layouts_put_whole_windows_on_both_stages(side, patch, window):
    layout = swin_layout(side)
    assert (layout["patch_size"], layout["window_size"]) == (patch, window)
    grid = side // patch
    assert grid % window == 0 and (grid // 2) % window == 0  # stage 1: 2 x 2 windows; stage 2: one


def test_an_image_size_the_swin_cannot_take_is_one_line_naming_what_to_pass():
    method = create("moby", in_chans=1)
    with pytest.raises(SelfsupError) as error:
        method.default_views(32, 1)
    message = str(error.value)
    assert "\n" not in message and "--image-size 28" in message
    fitting = yaml.safe_load(message.split("backbone_kwargs='")[1].split("'")[0])
    assert fitting == {**make_config("moby").backbone_kwargs, "img_size": 32, "patch_size": 2, "window_size": 8}
    create("moby", in_chans=1, backbone_kwargs=fitting).default_views(32, 1)  # what it names works
    patches_of_4 = create("moby", in_chans=1, backbone_kwargs={"img_size": 30, "patch_size": 4, "depths": [1, 1],
                                                               "num_heads": [1, 2], "embed_dim": 8})
    with pytest.raises(SelfsupError, match="30 px images do not split into the backbone's 4 px patches") as error:
        patches_of_4.default_views(30, 1)
    assert yaml.safe_load(str(error.value).split("backbone_kwargs='")[1].split("'")[0]) == {
        "img_size": 30, "patch_size": 3, "window_size": 5, "depths": [1, 1], "num_heads": [1, 2], "embed_dim": 8}
    for side in (33, 34):  # odd, and 2 x 17: no patch and 4-8 token window fit
        with pytest.raises(SelfsupError, match="--image-size 28 or 32"):
            method.default_views(side, 1)


def test_training_step_is_the_symmetric_loss_against_a_float64_reference_values_and_gradients():
    torch.manual_seed(0)
    method = create("moby", in_chans=1, **SMALL).double()
    with torch.no_grad():  # a target that differs from the online network, and queues of earlier keys
        for p in method.target_backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
        method.queue1.keys.copy_(F.normalize(torch.randn_like(method.queue1.keys), dim=1))
        method.queue2.keys.copy_(F.normalize(torch.randn_like(method.queue2.keys), dim=1))
    x1, x2 = (v.double() for v in _views())
    online = [p for p in method.parameters() if p.requires_grad]
    loss = method.training_step([x1, x2])["loss"]
    ours = torch.autograd.grad(loss, online)
    q1, q2 = (method.predictor(method.projector(method.backbone(x))) for x in (x1, x2))
    with torch.no_grad():
        k1, k2 = (method.target_projector(method.target_backbone(x)) for x in (x1, x2))
    reference = naive_moby(q1, q2, k1, k2, method.queue1.keys, method.queue2.keys, 0.2)
    torch.testing.assert_close(loss, reference)
    for a, b in zip(ours, torch.autograd.grad(reference, online), strict=True):
        torch.testing.assert_close(a, b)


def test_only_the_online_network_learns():
    torch.manual_seed(0)
    method = create("moby", in_chans=1, **SMALL)
    method.training_step(_views())["loss"].backward()
    for module in (method.backbone, method.projector, method.predictor):
        assert all(p.grad is not None for p in module.parameters())
    targets = [*method.target_backbone.parameters(), *method.target_projector.parameters()]
    assert targets and all(p.grad is None and not p.requires_grad for p in targets)
    optimised = {id(p) for g in create_optimizer(method, "adamw", 1e-3, 0.05, 0.9).param_groups for p in g["params"]}
    assert not any(id(p) in optimised for p in targets)


def test_drop_path_only_on_the_online_network():
    method = create("moby", in_chans=1, **{**SMALL, "backbone_kwargs": {**TINY_SWIN, "drop_path_rate": 0.3}})
    online = [m.drop_prob for m in method.backbone.modules() if isinstance(m, DropPath)]
    target = [m.drop_prob for m in method.target_backbone.modules() if isinstance(m, DropPath)]
    assert max(online) == pytest.approx(0.3) and target == [0.0] * len(online)
    x = _views()[0]
    torch.testing.assert_close(method.target(x), method.target(x))  # in train mode, yet deterministic


def test_ema_schedule_runs_from_0_99_to_1():
    torch.manual_seed(0)
    method = create("moby", in_chans=1, **SMALL)
    assert method.ema_momentum.item() == pytest.approx(0.99)
    with torch.no_grad():  # stands in for an optimiser step
        for p in [*method.backbone.parameters(), *method.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = [*method.backbone.parameters(), *method.projector.parameters()]
    before = [p.clone() for p in [*method.target_backbone.parameters(), *method.target_projector.parameters()]]
    method.after_step(25, 100)
    m = 1 - 0.01 * (np.cos(np.pi * 0.25) + 1) / 2  # ≈ 0.99146
    assert method.ema_momentum.item() == pytest.approx(m) and cosine_momentum(0.99, 25, 100) == pytest.approx(m)
    after = [*method.target_backbone.parameters(), *method.target_projector.parameters()]
    for xi, old, theta in zip(after, before, online, strict=True):
        torch.testing.assert_close(xi, m * old + (1 - m) * theta)  # ξ ← m·ξ + (1 − m)·θ
    frozen = [p.clone() for p in after]
    method.after_step(100, 100)  # m = 1 at the end: the target stays
    assert method.ema_momentum.item() == 1.0 and all(torch.equal(a, b) for a, b in zip(frozen, after))


def test_keys_are_enqueued_after_the_loss_each_view_into_its_own_queue():
    torch.manual_seed(0)
    method = create("moby", in_chans=1, **SMALL)
    queues = method.queue1.keys.clone(), method.queue2.keys.clone()
    x1, x2 = _views(B=6)
    method.training_step([x1, x2])
    assert torch.equal(method.queue1.keys, queues[0]) and torch.equal(method.queue2.keys, queues[1])  # not yet
    k1, k2 = method._new_keys
    torch.testing.assert_close(k1, method.target(x1)) and torch.testing.assert_close(k2, method.target(x2))
    method.after_step(1, 10)
    torch.testing.assert_close(method.queue1.keys[:6], F.normalize(k1, dim=1))  # view 1's keys into Q₁
    torch.testing.assert_close(method.queue2.keys[:6], F.normalize(k2, dim=1))  # view 2's into Q₂
    assert torch.equal(method.queue1.keys[6:], queues[0][6:]) and method.queue1.ptr.item() == 6
    assert method.queue2.ptr.item() == 6 and method._new_keys is None


def test_queue_sizes_are_checked_against_the_batch_and_the_data():
    method = create("moby", in_chans=1, **{**SMALL, "queue_size": 16})
    with pytest.raises(SelfsupError, match="queue_size 16 is shorter than one global batch"):
        method.prepare(1000, 1000 // 32)
    assert "each queue" in method.prepare(20, 20 // 8)  # 16 keys of 20 images: an image's own key is a negative
    assert method.prepare(1000, 1000 // 8) is None


def _step_on_each_rank(rank: int, world: int, x1: torch.Tensor, x2: torch.Tensor):
    torch.manual_seed(0)  # the same initial network and queues on every rank, as DDP broadcasts them
    method = create("moby", in_chans=1, **SMALL)
    method.training_step([x1.chunk(world)[rank], x2.chunk(world)[rank]])
    k1, k2 = method._new_keys
    method.after_step(1, 10)
    return k1, k2, method.queue1.keys, method.queue2.keys, method.queue1.ptr, method.queue2.ptr


def test_two_processes_fill_both_queues_with_every_devices_keys_in_rank_order():
    x1, x2 = _views(B=8)
    (a1, a2, *queues0), (b1, b2, *queues1) = run_distributed(_step_on_each_rank, world=2, args=(x1, x2))
    for q0, q1 in zip(queues0, queues1):
        assert torch.equal(q0, q1)  # every device holds the same queues
    queue1, queue2, ptr1, ptr2 = queues0
    torch.testing.assert_close(queue1[:8], F.normalize(torch.cat([a1, b1]), dim=1))
    torch.testing.assert_close(queue2[:8], F.normalize(torch.cat([a2, b2]), dim=1))
    assert ptr1.item() == ptr2.item() == 8


def test_trains_from_the_cli_on_fashion_mnist_resumes_exactly_and_exports(tmp_path):
    base = ["--data", "fashion-mnist", "--limit-samples", "96", *CLI]
    assert main(["train", "moby", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    shutil.copytree(tmp_path / "full", tmp_path / "half")  # then forget everything after step 2, as a kill would
    for path in (tmp_path / "half" / "checkpoints").iterdir():
        if read_checkpoint(path)["global_step"] > 2:
            path.unlink()
    assert main(["train", "moby", "--resume", "--out", str(tmp_path / "half"), "--no-progress"]) == 0
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    resumed = read_checkpoint(tmp_path / "half" / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == full["global_step"] == 4 and full["selfsup"]["in_chans"] == 1
    assert full["state_dict"]["method.queue1.ptr"].item() == 4 * 8 % 24
    for key in full["state_dict"]:
        torch.testing.assert_close(resumed["state_dict"][key], full["state_dict"][key], rtol=0, atol=0, msg=key)
    checkpoint = tmp_path / "full" / "checkpoints" / "last.ckpt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "moby.safetensors")]) == 0
    method, _ = load_method(checkpoint)
    exported = load_exported(tmp_path / "moby.safetensors").eval()
    images = method.eval_batch([torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8) for _ in range(3)])
    assert torch.allclose(exported(images), method.embed(images), atol=1e-6)


def test_trains_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images" / "sub").mkdir(parents=True)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (20, 18, 3), dtype=np.uint8)).save(tmp_path / "images" / "sub" / f"{i}.png")
    assert main(["train", "moby", "--data", str(tmp_path / "images"), "--max-steps", "2",
                 "--out", str(tmp_path / "run"), *CLI]) == 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["selfsup"]["in_chans"] == 3
    assert checkpoint["state_dict"]["method.queue2.keys"].shape == (24, 8)
