"""`selfsup discover` (TokenCut): the Ncut bipartition against a dense numpy solve, a planted object found exactly,
the seed's component and its box, the frame back to image pixels, CorLoc on hand-made boxes, the ViT's keys, the
command end to end on paste-scenes, and the one-line refusals."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.data.cache import cache_root
from selfsup.errors import SelfsupError
from selfsup.eval.discover import (
    Frame,
    affinity,
    centred_box,
    corloc,
    key_encoder,
    last_keys,
    ncut,
    seed_component,
    token_box,
    tokencut,
)
from tests.test_cli import TINY, run

REAL_CACHE = cache_root()  # read at import, before conftest gives each test its own empty SELFSUP_CACHE
VIT = ["--backbone", "timm:vit_tiny_patch16_224", "--backbone-kwargs", "{img_size: 64, patch_size: 8, depth: 2}"]


def planted_keys(grid=(6, 6), rows=slice(1, 4), cols=slice(2, 5), dim=16, noise=0.05, seed=0):
    """Keys (h*w, dim): tokens in the planted block point along e0, the others along e1, plus small noise."""
    rng = np.random.default_rng(seed)
    planted = np.zeros(grid, bool)
    planted[rows, cols] = True
    keys = noise * rng.standard_normal((planted.size, dim))
    keys[planted.ravel(), 0] += 1.0
    keys[~planted.ravel(), 1] += 1.0
    return keys, planted


def reference_ncut(keys, tau=0.2, eps=1e-5):
    """(λ₂, y (N,) unit-norm) by a naive loop for W and numpy's symmetric solve of D^-1/2 (D − W) D^-1/2 z = λ z,
    y = D^-1/2 z; also the gap to λ₃."""
    n = len(keys)
    W = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            cos = keys[i] @ keys[j] / (np.linalg.norm(keys[i]) * np.linalg.norm(keys[j]))
            W[i, j] = 1.0 if cos > tau else eps
    d = W.sum(1)
    L = np.diag(d ** -0.5) @ (np.diag(d) - W) @ np.diag(d ** -0.5)
    values, vectors = np.linalg.eigh(L)
    y = vectors[:, 1] / np.sqrt(d)
    return values[1], y / np.linalg.norm(y), values[2] - values[1], W


def test_affinity_is_one_above_tau_and_eps_below():
    keys = np.random.default_rng(1).standard_normal((7, 3))
    np.testing.assert_array_equal(affinity(keys, 0.2, 1e-5), reference_ncut(keys)[3])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ncut_solves_the_generalised_eigenproblem(seed):
    keys = np.random.default_rng(seed).standard_normal((12, 4))
    value, y_ref, gap, _ = reference_ncut(keys)
    assert gap > 1e-3  # λ₂ is simple, so y is defined up to its sign
    foreground, y, eigenvalue = ncut(keys)
    assert eigenvalue == pytest.approx(value, abs=1e-9)
    y = y / np.linalg.norm(y)
    np.testing.assert_allclose(y * np.sign(y @ y_ref), y_ref, atol=1e-7)
    seed_token = np.argmax(np.abs(y))
    side = y > y.mean()
    np.testing.assert_array_equal(foreground, side if side[seed_token] else ~side)  # the seed's side
    assert foreground[seed_token]


def test_the_foreground_is_the_seeds_side_whatever_the_sign():
    keys, planted = planted_keys()
    foreground, y, _ = ncut(keys)
    np.testing.assert_array_equal(foreground, planted.ravel())  # the smaller block: the larger |y| (D-orthogonal)
    flipped = ncut(keys[::-1].copy())[0][::-1]  # another token order: the solver may return -y
    np.testing.assert_array_equal(flipped, planted.ravel())


def test_a_planted_object_block_is_found_exactly():
    keys, planted = planted_keys(grid=(8, 8), rows=slice(2, 5), cols=slice(1, 6))
    found = tokencut(keys, (8, 8))
    np.testing.assert_array_equal(found.component, planted)
    assert found.box == (1, 2, 6, 5)
    assert planted.ravel()[found.seed] and 0.9 < found.score <= 1.0  # two unconnected blocks: λ₂ ≈ 0
    assert not found.complete


def test_a_complete_graph_is_flagged():
    keys = np.ones((16, 4)) + 0.01 * np.random.default_rng(0).standard_normal((16, 4))  # every cosine near 1
    found = tokencut(keys, (4, 4))
    assert found.complete and found.eigenvalue == pytest.approx(1.0)


def test_the_component_is_the_seeds_and_the_box_bounds_it():
    foreground = np.zeros((6, 7), bool)
    foreground[0:2, 0:2] = True  # another region of the same side
    foreground[3:6, 3:5] = True
    foreground[4, 5] = True
    foreground[2, 2] = True  # touches [0:2, 0:2] diagonally only: not 4-connected to the seed's region
    seed = 4 * 7 + 4
    component = seed_component(foreground.ravel(), seed, (6, 7))
    expected = np.zeros((6, 7), bool)
    expected[3:6, 3:5] = True
    expected[4, 5] = True
    np.testing.assert_array_equal(component, expected)
    assert token_box(component) == (3, 3, 6, 6)


def test_the_frame_maps_boxes_and_masks_back_to_image_pixels():
    square = Frame(200, 200, 64)
    assert square.box((8, 16, 24, 64)) == pytest.approx([25, 50, 75, 200])
    wide = Frame(100, 200, 50)  # resized to 50 x 100, the centre 50 x 50 cropped: image columns 50-150
    assert wide.box((0, 0, 50, 50)) == pytest.approx([50, 0, 150, 100])
    component = np.zeros((5, 5), bool)  # 10 px patches on the 50 px input
    component[0, 0] = component[4, 4] = True
    mask = wide.mask(component, 10)
    assert mask.shape == (100, 200) and mask.sum() == 2 * 20 * 20
    assert mask[:20, 50:70].all() and mask[80:, 130:150].all() and not mask[:, :50].any()


def test_corloc_counts_iou_of_half_or_more_with_any_ground_truth_box():
    predicted = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    truths = [torch.tensor([[0, 0, 10, 20]]),  # IoU exactly 0.5: counted
              torch.tensor([[5, 5, 15, 15]]),  # 25 / 175
              torch.tensor([[30, 30, 40, 40], [1, 1, 10, 10]]),  # the second box: 81 / 100
              torch.zeros(0, 4)]  # no ground truth: left out
    score, best = corloc(predicted, truths)
    assert score == pytest.approx(2 / 3)
    assert best[:3] == pytest.approx([0.5, 25 / 175, 0.81]) and best[3] is None
    assert np.isnan(corloc(predicted[:1], [torch.zeros(0, 4)])[0])
    assert centred_box(64, 32).tolist() == [16, 8, 48, 24]


def test_last_keys_are_the_k_third_of_the_last_qkv_without_the_class_token():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=0).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))  # (2, 1 + 16, 192)
        x = vit.blocks[0](x)
        qkv = vit.blocks[1].attn.qkv(vit.blocks[1].norm1(x))  # (2, 17, 3 * 192)
    keys = last_keys(vit, images)
    assert keys.shape == (2, 16, 192)
    torch.testing.assert_close(keys, qkv[:, 1:, 192:384])


@pytest.fixture
def real_cache(monkeypatch):
    """The built-in sets as `bash scripts/setup.sh` cached them (paste-scenes is generated there once otherwise)."""
    monkeypatch.setenv("SELFSUP_CACHE", str(REAL_CACHE))


def test_discover_on_paste_scenes_writes_boxes_masks_figure_and_corloc(real_cache, tmp_path, capsys):
    out = tmp_path / "found"
    code, stdout, err = run(capsys, "discover", "--checkpoint", "random", *VIT, "--data", "paste-scenes",
                            "--limit", 6, "--batch-size", 4, "--figure-images", 4, "--out", out, "--no-progress")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == metrics["n_with_boxes"] == 6 and metrics["tag"] == "synthetic"
    assert 0 <= metrics["corloc"] <= 1 and 0 <= metrics["corloc_centred_box"] <= 1
    assert metrics["grid"] == [8, 8] and metrics["tokens"] == 64 and metrics["seconds_per_image"]["ncut"] > 0
    rows = json.loads((out / "boxes.json").read_text())["images"]
    assert [row["name"] for row in rows] == [f"test/{i}" for i in range(6)]
    for row in rows:
        x1, y1, x2, y2 = row["box"]
        assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and x1 % 8 == y1 % 8 == 0  # whole 8 px tokens
        mask = np.array(Image.open(out / row["mask"]))
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]  # the box bounds the mask
        assert mask.sum() // 255 == 64 * row["tokens"] and 0 <= row["iou"] <= 1
    assert metrics["corloc"] == pytest.approx(np.mean([row["iou"] >= 0.5 for row in rows]))
    assert Image.open(out / "overlay.png").size[0] > 100
    assert stdout.startswith(f"discover CorLoc {metrics['corloc']:.4f} (centred box ")
    assert "random-init timm:vit_tiny_patch16_224 | paste-scenes (test) [synthetic labels] 6 images" in stdout


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """1-step runs on digits (8 x 8 grey): MoCo v3 with a 1-block ViT (2 px patches), SimCLR with a ResNet."""
    runs = {}
    for name, method, options in (
            ("vit", "mocov3", ["--backbone", "timm:vit_tiny_patch16_224", "--set",
                               "backbone_kwargs={img_size: 8, patch_size: 2, depth: 1}", "--batch-size", "16",
                               "--num-workers", "0", "--no-progress", "--set", "proj_hidden_dim=32",
                               "--set", "pred_hidden_dim=32", "--set", "proj_dim=16"]),
            ("resnet", "simclr", TINY)):
        out = tmp_path_factory.mktemp(name)
        assert main(["train", method, "--data", "digits", "--max-steps", "1", "--out", str(out), *options]) == 0
        runs[name] = str(out / "checkpoints" / "last.ckpt")
    return runs


def test_a_vit_checkpoint_and_its_random_twin_discover(checkpoints, tmp_path):
    from selfsup.eval.discover import discover

    folder = tmp_path / "images"  # a plain image folder: every image, no boxes
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    trained = discover(checkpoints["vit"], str(folder), tmp_path / "a", progress=False)
    assert trained["encoder"] == "mocov3 timm:vit_tiny_patch16_224" and trained["grid"] == [4, 4]
    assert "corloc" not in trained and trained["tag"] is None
    rows = json.loads((tmp_path / "a" / "boxes.json").read_text())["images"]
    assert sorted(row["name"].rsplit("/", 1)[-1] for row in rows) == ["0.png", "1.png", "2.png"]
    assert np.array(Image.open(tmp_path / "a" / rows[0]["mask"])).shape == (24, 40)
    for row in rows:  # resized to 8 x 13, its columns 2-10 cropped: image columns 80/13-400/13 of 40 px
        assert 80 / 13 - 1e-2 <= row["box"][0] < row["box"][2] <= 400 / 13 + 1e-2
    twin = discover(checkpoints["vit"], str(folder), tmp_path / "b", random_init=True, progress=False)
    assert twin["encoder"] == "mocov3 timm:vit_tiny_patch16_224 at random init"
    trained_keys = key_encoder(checkpoints["vit"]).vit.blocks[-1].attn.qkv.weight
    assert not torch.equal(trained_keys, key_encoder(checkpoints["vit"], random_init=True).vit.blocks[-1].attn.qkv.weight)


def test_a_resnet_checkpoint_is_refused_in_one_line(checkpoints, real_cache, tmp_path, capsys):
    code, _, err = run(capsys, "discover", "--checkpoint", checkpoints["resnet"], "--data", "paste-scenes",
                       "--out", tmp_path)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("selfsup: error: discover reads the keys of a ViT's last attention layer and simclr "
                          "resnet10t encodes with a ResNet; pass a checkpoint trained with a timm ViT backbone")


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint", "random", "--backbone", "resnet18"], "random-init resnet18 encodes with a ResNet; pass a"),
    (["--checkpoint", "random"], "--checkpoint random needs a ViT to build: pass --backbone timm:vit_tiny_patch16_224"),
    (["--checkpoint", "pixels"], "discover needs a ViT's attention keys and raw pixels; pass a checkpoint"),
    (["--checkpoint", "random", *VIT, "--image-size", "32"],
     "random-init timm:vit_tiny_patch16_224 takes 64x64 px inputs, not 32; pass --image-size 64"),
    (["--checkpoint", "random", *VIT, "--random-init"], "--random-init makes the random twin of a checkpoint file"),
    (["--checkpoint", "random", *VIT, "--limit", "0"], "--limit must be at least 1, got 0"),
])
def test_bad_options_are_one_line(real_cache, tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "discover", *argv, "--data", "paste-scenes", "--out", tmp_path)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert message in err


def test_a_split_for_a_plain_folder_is_refused(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(SelfsupError, match="--split applies to dense data"):
        from selfsup.eval.discover import open_images

        open_images(str(tmp_path), "test")
