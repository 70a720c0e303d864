import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Subset
from torchvision.ops import FeaturePyramidNetwork
from torchvision.transforms import v2

from selfsup.checkpoints import load_method
from selfsup.cli import main
from selfsup.data.dense import DenseSet, DenseTarget
from selfsup.data.open import open_unlabeled
from selfsup.errors import SelfsupError
from selfsup.losses.sadlcd import SaDLCDLoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.sadlcd import SaDLCD, point_features, swap_background
from selfsup.nn import stage_features
from selfsup.views import Bands
from selfsup.views.sadlcd import SaDLCDViews
from tests.eval.test_change import write_levir
from tests.methods.test_glcnet import decoded, position_image
from tests.resume_check import trains_resumes_and_exports

SMALL = {"backbone": "resnet10t", "backbone_kwargs": {"channels": [16, 32, 64, 128]}, "fpn_channels": 16,
         "proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8, "n_points": 4}
TINY = ["--backbone", "resnet10t", "--batch-size", "4", "--num-workers", "0", "--no-progress", "--image-size", "32",
        "--set", "backbone_kwargs={channels: [16, 32, 64, 128]}", "--set", "fpn_channels=16",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--set", "pred_hidden_dim=8", "--set", "n_points=4"]


def test_registered_with_the_authors_defaults():
    assert METHODS["sadlcd"] is SaDLCD and "push term" in SaDLCD.deviations
    c = make_config("sadlcd")
    assert (c.n_points, c.push_weight, c.swap_weight, c.backbone) == (16, 1.0, 0.5, "resnet18")
    assert (c.optimizer, c.lr, c.weight_decay, c.proj_hidden_dim, c.proj_dim, c.pred_hidden_dim) == (
        "sgd", 0.04, 5e-4, 2048, 1024, 256)
    method = create("sadlcd", in_chans=6, **SMALL)
    assert isinstance(method.fpn, FeaturePyramidNetwork) and isinstance(method.default_views(32, 6), SaDLCDViews)


@pytest.mark.parametrize("options, message", [({"n_points": 0}, "n_points >= 1"),
                                              ({"fpn_channels": 0}, "fpn_channels >= 1")])
def test_bad_options_are_refused_with_one_line(options, message):
    with pytest.raises(SelfsupError, match=message):
        create("sadlcd", **{**SMALL, **options})


# ---- the views: class-balanced points on the overlap, the same source pixels in both views ----------------------

def foreground_map(H, W):
    classes = torch.zeros(H, W, dtype=torch.uint8)
    classes[H // 4: H // 2 + 2, W // 3: 2 * W // 3] = 1
    classes[:, :2] = 255  # ignored: never a point
    return classes


@pytest.mark.parametrize("H, W", [(48, 40), (24, 24)])
def test_points_are_class_balanced_on_the_overlap_and_the_same_pixels_in_both_views(H, W):
    N = 8
    views = SaDLCDViews(32, 2, n_points=N, jitter_p=0.0, interpolation=v2.InterpolationMode.NEAREST)
    image, classes = position_image(H, W), foreground_map(H, W)
    torch.manual_seed(0)
    orientations, both = set(), 0
    for _ in range(16):
        x1, x2, points1, points2, valid, foreground1, sources = views.draw(image, classes)
        assert points1.shape == points2.shape == (2 * N, 2) and sources.shape == (2, N)
        (r1, c1), (r2, c2) = decoded(x1), decoded(x2)
        seen = [set(zip(r.flatten().tolist(), c.flatten().tolist())) for r, c in ((r1, c1), (r2, c2))]
        overlap = seen[0] & seen[1]
        assert torch.equal(foreground1, classes[r1, c1] == 1)
        for c in (0, 1):
            shared = [p for p in overlap if classes[p] == c]
            assert bool(valid[c]) == bool(shared)
            if not valid[c]:
                assert torch.all(points1[c * N:(c + 1) * N] == 0) and torch.all(sources[c] == -1)
                continue
            rows, cols = points1[c * N:(c + 1) * N].T
            at1 = list(zip(r1[rows, cols].tolist(), c1[rows, cols].tolist()))
            rows, cols = points2[c * N:(c + 1) * N].T
            at2 = list(zip(r2[rows, cols].tolist(), c2[rows, cols].tolist()))
            expected = list(zip((sources[c] // W).tolist(), (sources[c] % W).tolist()))
            assert at1 == at2 == expected  # exactly aligned: point k is one source pixel in both views
            assert all(p in overlap and classes[p] == c for p in at1)  # inside the overlap, of its class
            assert len(set(at1)) == min(N, len(shared))  # without replacement when the overlap has enough
        both += bool(valid.all())
        for rows, cols in ((r1, c1), (r2, c2)):
            orientations.add((int(torch.sign(rows[-1, 0] - rows[0, 0])), int(torch.sign(cols[0, -1] - cols[0, 0]))))
    assert both >= 12 and len(orientations) >= 3  # redraws find both classes; flips happened


def test_tiles_with_one_class_give_points_of_that_class_only():
    views = SaDLCDViews(16, 2, n_points=4, jitter_p=0.0)
    image = position_image(20, 20)
    torch.manual_seed(0)
    *_, valid, foreground1, sources = views.draw(image, torch.zeros(20, 20, dtype=torch.uint8))
    assert valid.tolist() == [True, False] and not foreground1.any() and torch.all(sources[1] == -1)
    *_, valid, foreground1, _ = views.draw(image, torch.ones(20, 20, dtype=torch.uint8))
    assert valid.tolist() == [False, True] and foreground1.all()


def test_colour_follows_the_band_rule(spied):
    torch.manual_seed(0)
    classes = foreground_map(40, 40)
    for channels in (4, 6, Bands(3, rgb=False)):
        views = SaDLCDViews(32, channels)
        for _ in range(6):
            views((torch.randint(0, 256, (int(channels), 40, 40), dtype=torch.uint8), classes))
    assert spied == []
    views = SaDLCDViews(32, 3)  # RGB: jitter and grayscale do apply, so the check above can fail
    for _ in range(6):
        views((torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8), classes))
    assert spied and {channels for _, channels in spied} == {3}


# ---- point features and the background swap ------------------------------------------------------------------

def test_point_features_interpolate_the_map_at_each_pixel_centre():
    h = w = 8  # a stride-4 map of 32 px inputs
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    f = torch.stack([10 * ys + xs, -ys])[None]  # (1, 2, h, w): linear, so bilinear interpolation is exact
    points = torch.tensor([[[2, 3], [17, 9], [29, 26], [14, 14]]])  # (1, 4, 2) (row, col), inside the border
    out = point_features(f, points, 32)  # (1, 4, 2)
    y, x = (points[0, :, 0] + 0.5) / 4 - 0.5, (points[0, :, 1] + 0.5) / 4 - 0.5  # the pixel centre in map cells
    torch.testing.assert_close(out[0], torch.stack([10 * y + x, -y], dim=1).double())


def test_the_background_swap_keeps_a_s_foreground_exactly_and_b_s_background_away_from_it():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 24, 24)
    fg = torch.zeros(3, 24, 24, dtype=torch.bool)
    fg[0, 5:10, 5:10], fg[1, 12:20, 3:8] = True, True  # image 2 has no foreground
    for sigma in (0.0, 1.5):
        xs = swap_background(x, fg, sigma)
        partner = x[[2, 0, 1]]  # image i on the background of image i-1
        radius = 0 if sigma == 0 else 5  # the kernel's half-width, 2·ceil(3σ)+1 = 11 px
        near = F.max_pool2d(fg[:, None].float(), 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0
        for i in range(3):
            assert torch.equal(xs[i][:, fg[i]], x[i][:, fg[i]])  # A's foreground pixels unchanged
            assert torch.equal(xs[i][:, ~near[i]], partner[i][:, ~near[i]])  # B's background beyond the feather
        if sigma > 0:  # blended at the edge: strictly between the two images just outside the mask
            alpha = (xs[0, :, 10, 7] - partner[0, :, 10, 7]) / (x[0, :, 10, 7] - partner[0, :, 10, 7])
            assert torch.all((alpha > 0.05) & (alpha < 0.95))


# ---- the network and the training step -----------------------------------------------------------------------

def batch_of(method, B=4, C=3, S=32):
    views = method.default_views(S, C)
    torch.manual_seed(1)
    classes = foreground_map(40, 40)
    items = [views((torch.randint(0, 256, (C, 40, 40), dtype=torch.uint8), classes)) for _ in range(B)]
    return [torch.stack([item[k] for item in items]) for k in range(6)]


def test_dense_features_are_the_fpn_s_finest_map():
    method = create("sadlcd", in_chans=4, **SMALL).eval()
    x = torch.randn(2, 4, 32, 32)
    stages = stage_features(method.backbone, x)
    expected = method.fpn({str(k): s for k, s in enumerate(stages)})["0"]
    torch.testing.assert_close(method.dense_features(x), expected)
    assert expected.shape == (2, 16, 8, 8) and method.embed(x).shape == (2, method.backbone.num_features)


def test_step_is_the_loss_of_the_aligned_points_and_the_swapped_view():
    method = create("sadlcd", in_chans=3, **SMALL)
    x1, x2, points1, points2, valid, fg1 = batch = batch_of(method)
    torch.manual_seed(2)
    out = method.training_step(batch)
    N = 4
    h1 = point_features(method.dense_map(x1), points1, 32)
    h2 = point_features(method.dense_map(x2), points2, 32)
    z1, z2 = method.projector(h1.flatten(0, 1)), method.projector(h2.flatten(0, 1))
    p1, p2 = method.predictor(z1), method.predictor(z2)
    hs = point_features(method.dense_map(swap_background(x1, fg1, 2.0)), points1[:, N:], 32)
    ps = method.predictor(method.projector(hs.flatten(0, 1))).view(4, N, -1)
    parts = [t.reshape(4, 2, N, -1) for t in (p1, p2, z1, z2, h1, h2)]
    loss, pull, push, swap = SaDLCDLoss(1.0, 0.5)(*parts, ps, valid)
    torch.testing.assert_close(out["loss"], loss)
    torch.testing.assert_close(torch.stack([out["pull_loss"], out["push_loss"], out["swap_loss"]]),
                               torch.stack([pull, push, swap]).detach())
    method.zero_grad()
    method.training_step(batch)["loss"].backward()
    for part in (method.backbone, method.fpn, method.projector, method.predictor):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad)
    assert [name for name, _, _ in method.view_masks(batch)] == ["view 1", "background swap"]


# ---- training images: each with its foreground map, or one clear line ----------------------------------------

class Tiles(DenseSet):
    def __init__(self, n=6, has=("semantic",)):
        super().__init__(name="tiles", tag="synthetic", classes=["a", "b"], channels=3, native_size=12, has=has)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        semantic = torch.zeros(12, 12, dtype=torch.int64)
        semantic[:, :4], semantic[:, 4:6], semantic[0] = 1, 2, 255
        image = torch.full((3, 12, 12), i, dtype=torch.uint8)
        return image, DenseTarget(semantic=semantic if "semantic" in self.has else None)


def test_training_images_carry_foreground_maps_through_subsets():
    method = create("sadlcd", **SMALL)
    images = Subset(Subset(Tiles().images(), [5, 3, 1, 0]), [2, 0])  # images 1 and 5
    data = method.training_images(images)
    assert len(data) == 2
    (image, classes), label = data[0]
    assert label == -1 and int(image[0, 0, 0]) == 1
    assert classes[1:, :6].eq(1).all() and classes[1:, 6:].eq(0).all() and classes[0].eq(255).all()  # any class: 1
    assert int(data[1][0][0][0, 0, 0]) == 5


def write_dense_folder(root, n=16, size=40):
    """n RGB images with a bright square on noise, DIR/masks/ marking the square with class 1."""
    rng = np.random.default_rng(0)
    for part in ("images", "masks"):
        (root / part).mkdir(parents=True)
    for i in range(n):
        image = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
        ids = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 16, 2)
        image[y:y + 16, x:x + 16] = rng.integers(150, 255, (16, 16, 3))
        ids[y:y + 16, x:x + 16] = 1
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(ids, "L").save(root / "masks" / f"{i}.png")
    return root


def test_a_dense_folder_gives_its_train_images_with_their_masks_and_not_the_mask_files(tmp_path):
    root = write_dense_folder(tmp_path / "d", n=10, size=20)
    images = open_unlabeled(str(root))  # the folder listing: images/ and masks/ alike
    assert len(images) == 20
    data = create("sadlcd", **SMALL).training_images(images)
    assert len(data) == 8  # the dense folder's train split (80 %); mask PNGs are no training images
    for k in range(len(data)):
        (image, classes), _ = data[k]
        dense_index = data.indices[k]
        stem = data.dense.paths[dense_index]
        mask = np.asarray(Image.open(stem.replace("images", "masks")))
        assert image.shape == (3, 20, 20) and np.array_equal(classes.numpy(), mask)


@pytest.mark.parametrize("which, message", [
    ("plain", "has none: pass --data paste-scenes, --data trees, or a folder laid out as DIR/images/"),
    ("boxes", "has none (it has boxes)"),
])
def test_data_without_masks_is_one_line(tmp_path, which, message):
    method = create("sadlcd", **SMALL)
    if which == "plain":
        (tmp_path / "plain").mkdir()
        for i in range(3):
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "plain" / f"{i}.png")
        images = open_unlabeled(str(tmp_path / "plain"))
    else:
        images = Tiles(has=("boxes",)).images()
    with pytest.raises(SelfsupError, match="sadlcd needs a semantic mask") as error:
        method.training_images(images)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_command_refuses_images_without_masks_in_one_line(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    for i in range(8):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "plain" / f"{i}.png")
    code = main(["train", "sadlcd", "--data", str(tmp_path / "plain"), *TINY, "--max-steps", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "sadlcd needs a semantic mask" in err and err.count("\n") == 1 and "Traceback" not in err


# ---- from the command line ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_trains_from_the_cli_resumes_exactly_exports_and_evaluates(tmp_path, capsys):
    data = write_dense_folder(tmp_path / "dense")
    checkpoint = trains_resumes_and_exports("sadlcd", data, TINY, tmp_path / "full")
    method, _ = load_method(checkpoint)
    assert method.dense_features(torch.randn(2, 3, 32, 32)).shape == (2, 16, 8, 8)
    capsys.readouterr()
    out = tmp_path / "segment.json"
    assert main(["eval", "segment", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["feature_dim"] == 16 and result["encoder"].startswith("sadlcd")
    levir = write_levir(tmp_path / "levir", n_train=4, n_test=2)
    out = tmp_path / "change.json"
    assert main(["eval", "change", "--checkpoint", str(checkpoint), "--data", str(levir), "--max-steps", "2",
                 "--no-progress", "--out", str(out)]) == 0
    assert 0 <= json.loads(out.read_text())["f1"] <= 1


class _Masks(DenseSet):
    """10 grey 16 px images; the masks of images `with_object` hold a 4 x 4 object of class 1."""

    def __init__(self, with_object):
        super().__init__(name="masks", tag="synthetic", classes=["thing"], channels=3, native_size=16)
        self.with_object = set(with_object)

    def __len__(self):
        return 10

    def __getitem__(self, i):
        semantic = torch.zeros(16, 16, dtype=torch.int64)
        if i in self.with_object:
            semantic[4:8, 4:8] = 1
        return torch.full((3, 16, 16), 128, dtype=torch.uint8), DenseTarget(semantic=semantic)


def test_training_masks_without_foreground_are_refused_and_few_warned(caplog):
    from selfsup.methods.sadlcd import ForegroundMaps

    with pytest.raises(SelfsupError, match="no mask of 9 of the 9 training images of masks holds a foreground"):
        ForegroundMaps(_Masks(with_object=[9]), list(range(9)))  # the one object is in a held-out image
    with caplog.at_level("WARNING"):
        ForegroundMaps(_Masks(with_object=[3]), list(range(10)))
    assert "only 1 masks of 10 of the 10 training images of masks hold foreground" in caplog.text
    caplog.clear()
    ForegroundMaps(_Masks(with_object=range(10)), list(range(10)))
    assert "foreground" not in caplog.text
