import json

import numpy as np
import pytest
import torch

from selfsup.checkpoints import load_exported, load_method
from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.eval import detect
from selfsup.eval.detect import DETRDetector, evaluate_detect
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.updetr import UPDETR, QueryPatchViews, group_mask
from selfsup.nn.detr import DETR
from tests.eval.test_detect import Squares
from tests.resume_check import resumed_like_uninterrupted

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [8, 16, 32, 64]}, "small_stem": True,
         "d_model": 32, "ffn_dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "n_patches": 3,
         "queries_per_patch": 2, "patch_size": 8, "min_patch": 4}
TINY = ["--recipe", "paper", "--batch-size", "4", "--num-workers", "0", "--no-progress", "--image-size", "16",
        *[a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _method(**overrides):
    method = create("updetr", in_chans=3, **{**SMALL, **overrides})
    method.data_meta["image_size"] = 16
    return method


def _batch(method, B=2, seed=0):
    torch.manual_seed(seed)
    views = method.default_views(16, 3)
    samples = [views(torch.randint(0, 256, (3, 20, 24), dtype=torch.uint8)) for _ in range(B)]
    return [torch.stack(t) for t in zip(*samples)]


def test_registered_with_the_paper_defaults():
    assert METHODS["updetr"] is UPDETR and UPDETR.deviations
    c = make_config("updetr")
    assert (c.n_patches, c.queries_per_patch, c.patch_dropout, c.optimizer, c.weight_decay) == (10, 10, 0.1, "adamw",
                                                                                                 1e-4)
    assert (c.w_class, c.w_l1, c.w_giou, c.w_rec, c.eos_coef) == (1.0, 5.0, 2.0, 1.0, 0.1)


def test_views_give_the_image_its_patches_and_their_boxes():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    x, patches, boxes = QueryPatchViews(16, 3, 5, 8, 4)(image)
    assert x.shape == (3, 16, 16) and patches.shape == (5, 3, 8, 8) and boxes.shape == (5, 4)
    corners = torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1) * 16
    assert (corners >= -1e-5).all() and (corners <= 16 + 1e-5).all() and (boxes[:, 2:] * 16 >= 4 - 1e-5).all()
    x, whole, boxes = QueryPatchViews(16, 3, 2, 16, 16)(image)  # patches as large as the image: the image itself
    torch.testing.assert_close(whole[0], x)
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2))


def test_group_mask_is_block_diagonal():
    mask = group_mask(torch.arange(6) // 2)
    expected = ~torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * 3)
    assert torch.equal(mask, expected)
    assert torch.equal(group_mask(torch.tensor([1, 0, 1])), torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]]).bool())


def test_object_queries_are_shuffled_in_training_only():
    method = _method()
    assert torch.equal(method.eval().query_groups(), torch.arange(6) // 2)
    torch.manual_seed(0)
    shuffled = [method.train().query_groups() for _ in range(3)]
    assert all(sorted(g.tolist()) == [0, 0, 1, 1, 2, 2] for g in shuffled)
    assert any(not torch.equal(g, torch.arange(6) // 2) for g in shuffled)


def test_no_query_attends_across_groups():
    method = _method().eval()  # no dropout
    x, patches, _ = _batch(method)
    p = method.patch_features(patches)  # (B, 3, D)
    changed = p.clone()
    changed[:, 1] += 5 * torch.randn_like(changed[:, 1])  # group 1's patch only
    with torch.no_grad():
        before, after = (method.forward_queries(x, q) for q in (p, changed))
    k = method.config.queries_per_patch
    for a, b in zip(before, after):  # logits, boxes, features: (B, Q, ...)
        torch.testing.assert_close(a[:, :k], b[:, :k])
        torch.testing.assert_close(a[:, 2 * k:], b[:, 2 * k:])
        assert not torch.allclose(a[:, k:2 * k], b[:, k:2 * k])
    groups = torch.tensor([2, 0, 1, 1, 0, 2])  # shuffled object queries: the mask follows the groups
    with torch.no_grad():
        before, after = (method.forward_queries(x, q, groups) for q in (p, changed))
    for a, b in zip(before, after):
        torch.testing.assert_close(a[:, groups != 1], b[:, groups != 1])
        assert not torch.allclose(a[:, groups == 1], b[:, groups == 1])
    method.detr.transformer.decoder.layers[0].self_attn.forward = _unmasked(
        method.detr.transformer.decoder.layers[0].self_attn.forward)  # without the mask the groups see each other
    with torch.no_grad():
        assert not torch.allclose(method.forward_queries(x, p)[1][:, :k], method.forward_queries(x, changed)[1][:, :k])


def _unmasked(attention):
    def forward(*args, **kwargs):
        kwargs["attn_mask"] = None
        return attention(*args, **kwargs)
    return forward


def test_the_step_is_the_loss_of_the_queries_and_the_backbone_stays_frozen():
    method = _method().train()
    assert not method.backbone.training and method.detr.training
    batch = _batch(method)
    bn = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    torch.manual_seed(1)
    out = method.training_step(batch)
    out["loss"].backward()
    assert all(p.grad is None for p in method.backbone.parameters())
    assert all(p.grad is not None for p in [*method.detr.transformer.parameters(), *method.patch_proj.parameters(),
                                             *method.class_head.parameters(), *method.feature_head.parameters()])
    assert all(torch.equal(v, method.backbone.state_dict()[k]) for k, v in bn.items())  # BN statistics kept
    method.eval()
    x, patches, boxes = batch
    p = method.patch_features(patches)
    logits, pred, f = method.forward_queries(x, p)
    labels = [torch.zeros(3, dtype=torch.int64)] * 2
    torch.testing.assert_close(method.training_step(batch)["loss"],
                               method.criterion(logits, pred, list(boxes), labels, f, list(p))["loss"])


def _images(folder, n=12, size=20):
    rng = np.random.default_rng(0)
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + i % 3, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def backbone_checkpoint(tmp_path_factory):
    """A 1-step SimCLR run on digits with the tiny ResNet: a selfsup image checkpoint (1-channel)."""
    run = tmp_path_factory.mktemp("simclr")
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "1", "--batch-size", "8", "--recipe", "paper",
                 "--num-workers", "0", "--no-progress", "--out", str(run), "--backbone", "resnet10t", "--set",
                 "small_stem=true", "--set", "backbone_kwargs={channels: [8, 16, 32, 64]}", "--set",
                 "proj_hidden_dim=16", "--set", "proj_dim=8"]) == 0
    return run / "checkpoints" / "last.ckpt"


def test_trains_on_builtin_data_from_a_checkpoint_resumes_exactly_and_exports(tmp_path, backbone_checkpoint):
    base = ["--data", "digits", *TINY, "--set", f"backbone_checkpoint={backbone_checkpoint}"]
    assert main(["train", "updetr", *base, "--max-steps", "4", "--checkpoint-every", "2",
                 "--out", str(tmp_path / "full")]) == 0
    full, resumed = resumed_like_uninterrupted("updetr", tmp_path / "full")
    assert resumed["global_step"] == full["global_step"] == 4
    source, _ = load_method(backbone_checkpoint)
    method, meta = load_method(tmp_path / "full" / "checkpoints" / "last.ckpt")
    assert meta["data_meta"]["in_chans"] == 1 and meta["data_meta"]["backbone_from"]["method"] == "simclr"
    for key, value in source.encoder().state_dict().items():  # frozen: still the checkpoint's weights
        torch.testing.assert_close(method.backbone.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert isinstance(method.encoder(), DETR)
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "detr.safetensors")]) == 0
    exported = load_exported(tmp_path / "detr.safetensors").eval()
    images = torch.rand(2, 1, 8, 8)
    for mine, theirs in zip(exported(images), method.encoder().eval()(images)):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "checkpoints" / "last.ckpt"),
                 "--out", str(tmp_path / "detr.onnx")]) == 1  # one clear line: a DETR goes to safetensors


def test_trains_on_an_image_folder_with_a_random_backbone_and_warns(tmp_path, capsys):
    folder = _images(tmp_path / "images")
    assert main(["train", "updetr", "--data", str(folder), *TINY, "--max-steps", "2", "--out", str(tmp_path / "r")]) \
        == 0
    assert "no backbone_checkpoint, so the frozen backbone is random" in capsys.readouterr().err
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt").exists()


def test_detr_fine_tuning_takes_the_pretrained_detr_whole(tmp_path, backbone_checkpoint, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "updetr", "--data", "digits", *TINY, "--set", f"backbone_checkpoint={backbone_checkpoint}",
                 "--max-steps", "1", "--out", str(run)]) == 0
    sets = {"train": Squares(8, size=32, seed=0), "test": Squares(4, size=32, seed=1)}
    monkeypatch.setattr(detect, "open_dense", lambda spec, split: sets[split])
    captured = {}
    build = detect.build_detector
    monkeypatch.setattr(detect, "build_detector", lambda *a: captured.setdefault("model", build(*a)))
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["eval", "detect", "--checkpoint", checkpoint, "--data", "squares", "--detector", "detr",
                 "--max-steps", "2", "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["summary"].startswith("detect squares (synthetic): detr on updetr DETR on resnet10t — AP50 ")
    assert (result["optimizer"], result["lr"], result["steps"]) == ("adamw", 1e-4, 2)
    model = captured.pop("model")
    assert isinstance(model, DETRDetector) and model.class_head.out_features == 2
    assert model.detr.transformer.decoder.layers[0].linear1.weight.shape == (64, 32)  # the pretrained sizes
    evaluate_detect(checkpoint, "squares", detector="detr", max_steps=0, out=str(tmp_path / "z.json"), progress=False)
    pretrained = load_method(checkpoint)[0].encoder().state_dict()
    for key, value in captured.pop("model").detr.state_dict().items():  # untrained: the UP-DETR checkpoint's DETR
        torch.testing.assert_close(value, pretrained[key], rtol=0, atol=0, msg=key)
    fresh = evaluate_detect(str(backbone_checkpoint), "squares", detector="detr", max_steps=0,
                            out=str(tmp_path / "f.json"), progress=False)
    assert fresh["encoder"] == "simclr resnet10t" and 0 <= fresh["ap50"] <= 1
    assert captured["model"].detr.num_features == 128 and captured["model"].detr.query_embed.num_embeddings == 100


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing.ckpt", "backbone_checkpoint '{tmp}/missing.ckpt' does not exist"),
    (lambda tmp: (tmp / "text.txt").write_text("hello") and tmp / "text.txt", "is not a selfsup checkpoint"),
    (lambda tmp: torch.save({"selfsup": {"method": "bert", "modality": "text", "method_config": {}}},
                            tmp / "t.ckpt") or tmp / "t.ckpt", "holds a bert model, not an image backbone"),
])
def test_a_bad_backbone_checkpoint_is_one_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SelfsupError) as error:
        create("updetr", backbone_checkpoint=str(path))
    assert message.format(tmp=tmp_path) in str(error.value) and "\n" not in str(error.value)
