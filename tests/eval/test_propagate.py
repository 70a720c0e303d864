import json

import pytest
import torch

from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.eval.features import FrozenEncoder
from selfsup.eval.propagate import (
    StageMap,
    clip_features,
    framewise,
    grid_oracle,
    jaccard,
    on_grid,
    propagate_labels,
    propagate_masks,
)
from tests.video.files import write_tiny_moving_objects

S, T, SIDE = 16, 6, 4  # frame side, frames, side of the square


def moving_square(shift: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (T, 17, S, S), masks bool (T, S, S)) of a SIDE x SIDE square moving `shift` px right per frame:
    a square pixel's feature is the one-hot of its place in the square (16 dims), every background pixel's the 17th
    one-hot, so each location has exact matches of its own label in every earlier frame."""
    features, masks = torch.zeros(T, SIDE * SIDE + 1, S, S), torch.zeros(T, S, S, dtype=torch.bool)
    features[:, -1] = 1
    for t in range(T):
        x = 2 + shift * t
        masks[t, 5:5 + SIDE, x:x + SIDE] = True
        features[t, -1, 5:5 + SIDE, x:x + SIDE] = 0
        features[t, :-1, 5:5 + SIDE, x:x + SIDE] = torch.eye(SIDE * SIDE).view(SIDE * SIDE, SIDE, SIDE)
    return features, masks


def test_jaccard_matches_a_naive_loop_and_scores_two_empty_masks_one():
    g = torch.Generator().manual_seed(0)
    predicted, truth = torch.rand(3, 5, 8, 8, generator=g) > 0.6, torch.rand(3, 5, 8, 8, generator=g) > 0.5
    predicted[1, 2], truth[1, 2] = False, False  # both empty: 1 by DAVIS's convention
    expected = torch.zeros(3, 5, dtype=torch.float64)
    for i in range(3):
        for t in range(5):
            inter = sum(bool(predicted[i, t, y, x] and truth[i, t, y, x]) for y in range(8) for x in range(8))
            union = sum(bool(predicted[i, t, y, x] or truth[i, t, y, x]) for y in range(8) for x in range(8))
            expected[i, t] = inter / union if union else 1.0
    assert torch.allclose(jaccard(predicted, truth), expected) and jaccard(predicted, truth)[1, 2] == 1.0


def test_features_that_track_the_object_propagate_its_mask_exactly():
    features, masks = moving_square()
    predicted = propagate_masks(features, masks[0], radius=None)
    assert predicted.shape == (T, S, S) and torch.equal(predicted, masks)
    assert float(jaccard(predicted[1:], masks[1:]).mean()) == 1.0
    # within a radius of 2 cells (the square moves 1 a frame): the previous frames still hold every match
    assert torch.equal(propagate_masks(features, masks[0], radius=2, context=1), masks)


def test_a_window_of_radius_0_and_no_context_copies_the_first_mask():
    features, masks = moving_square(shift=2)
    predicted = propagate_masks(features, masks[0], radius=0, context=0)
    assert all(torch.equal(predicted[t], masks[0]) for t in range(T))
    assert float(jaccard(predicted[1:], masks[1:]).mean()) < 0.5


def test_random_features_do_not_propagate_the_mask():
    _, masks = moving_square()
    features = torch.randn(T, 17, S, S, generator=torch.Generator().manual_seed(0))
    assert float(jaccard(propagate_masks(features, masks[0], radius=None)[1:], masks[1:]).mean()) < 0.3


def test_soft_labels_are_a_softmax_over_the_topk_sources():
    """One target location, frame 0 as the only source: y = Σ softmax(top-k affinities / τ) labels."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 1, 3, generator=g)  # (T, D, h, w): 3 locations
    mask = torch.tensor([[True, False, True]]).repeat_interleave(4, 1).repeat(2, 1)  # (2, 12): cells 0, 2 object
    y = propagate_labels(features, mask, topk=2, temperature=0.5, context=0, radius=None)
    f = torch.nn.functional.normalize(features.flatten(2), dim=1)  # (T, D, 3)
    for q in range(3):
        affinity = f[1, :, q] @ f[0]  # (3,)
        top = affinity.topk(2)
        expected = (torch.softmax(top.values / 0.5, 0) * torch.tensor([1.0, 0.0, 1.0])[top.indices]).sum()
        assert torch.isclose(y[1, 0, q], expected, atol=1e-6)
    assert torch.equal(y[0, 0], torch.tensor([1.0, 0.0, 1.0]))  # the first mask, area-averaged onto the grid


def test_grid_oracle_is_exact_for_a_cell_aligned_stripe_and_loses_what_a_cell_cannot_hold():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, 4:12] = True  # two rows of whole 4 x 4 cells (no corners, which bilinear upsampling rounds off)
    masks[1, 5:7, 5:7] = True  # a quarter of one cell
    oracle = grid_oracle(masks, 4, 4)
    assert torch.equal(oracle[0], masks[0]) and not oracle[1].any()


def test_coarse_maps_are_upsampled_to_the_grid_and_fine_ones_kept():
    features = torch.arange(4.0).view(1, 1, 2, 2)
    assert on_grid(features, 4).shape == (1, 1, 4, 4) and on_grid(features, 4)[0, 0, 0, 0] == 0.0  # edge replicated
    assert on_grid(features, 4)[0, 0, 3, 3] == 3.0 and on_grid(features, None) is features
    assert on_grid(torch.zeros(1, 1, 8, 8), 4).shape == (1, 1, 8, 8)


def test_bad_options_are_refused_in_one_line():
    features, masks = moving_square()
    with pytest.raises(SelfsupError, match="topk >= 1"):
        propagate_labels(features, masks[0], topk=0)


def _counting_encoder(modality: str) -> tuple[FrozenEncoder, list]:
    """An encoder whose dense map of an input is its mean grey level over a 2 x 2 grid; records its inputs."""
    seen = []

    def batch(items):
        seen.extend(items)
        return torch.stack([item.float() for item in items])

    def dense(x):  # image (B, 3, H, W) or window (B, T, H, W, 3) -> (B, 1, 2, 2)
        return x.flatten(1).mean(1).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)

    return FrozenEncoder(modality, "counting", batch, lambda x: x.flatten(1), dense=dense), seen


def test_clip_features_give_one_map_per_frame_with_video_windows_centred_on_it():
    clip = torch.arange(5).view(5, 1, 1, 1).expand(5, 4, 4, 3).to(torch.uint8)  # frame t is grey t
    encoder, seen = _counting_encoder("image")
    assert clip_features(encoder, clip, chunk=2)[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert seen[0].shape == (3, 4, 4)  # a frame, channels first
    encoder, seen = _counting_encoder("video")
    clip_features(encoder, clip)
    assert [w[:, 0, 0, 0].tolist() for w in seen] == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 4],
                                                       [1, 2, 3, 4, 4], [2, 3, 4, 4, 4]]


def test_framewise_embeds_the_mean_of_eight_middle_frames():
    clip = torch.arange(32).view(32, 1, 1, 1).expand(32, 4, 4, 3).to(torch.uint8)
    encoder, _ = _counting_encoder("image")
    by_frame = framewise(FrozenEncoder("image", "grey", encoder.batch, lambda x: x.flatten(1).mean(1, keepdim=True)))
    features = by_frame.embed(by_frame.batch([clip, clip // 2]))
    assert by_frame.modality == "video" and features.shape == (2, 1)
    assert features[:, 0].tolist() == [15.0, 7.5]  # frames 8, 10, ..., 22 (centre_clip: 8 at stride 2), halved
    with pytest.raises(SelfsupError, match="frame-wise"):
        framewise(by_frame)


def _train(run, method, data, *extra):
    return main(["train", method, "--data", str(data), "--max-steps", "1", "--batch-size", "4", "--out", str(run),
                 "--no-progress", "--num-workers", "0", *extra])


def test_cli_propagates_on_moving_objects_for_video_and_frame_wise_image_checkpoints(tmp_path, capsys):
    write_tiny_moving_objects(train=8, test=2)
    constcl = ["--set=width=4", "--set=blocks=1", "--set=frames=4", "--set=stride=1", "--set=size=32",
               "--set=boxes=2", "--set=proj_hidden_dim=8", "--set=proj_dim=8", "--set=decoder_dim=8",
               "--set=decoder_heads=2", "--set=decoder_layers=1"]
    assert _train(tmp_path / "video", "constcl", "moving-objects", *constcl) == 0
    out = tmp_path / "video.json"
    checkpoint = str(tmp_path / "video" / "checkpoints" / "last.ckpt")
    assert main(["eval", "propagate", "--checkpoint", checkpoint, "--out", str(out), "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(out.read_text())
    assert line.startswith(f"propagate J {result['j']:.4f}") and "[synthetic labels] 2 test clips of 32 frames" in line
    assert result["feature_grid"] == [2, 2] and result["propagation_grid"] == [16, 16] and result["modality"] == "video"
    assert 0 <= result["j"] <= 1
    assert result["j_oracle_at_grid"] < 1 and result["n_clips"] == 2 and result["tag"] == "synthetic"
    # an earlier stage of the video ResNet: twice as fine per stage, the time-averaged map of that stage
    assert main(["eval", "propagate", "--checkpoint", checkpoint, "--stage", "3", "--grid", "none", "--clips", "1",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["feature_grid"] == [4, 4] and result["stage"] == 3 and "stage 3 map" in result["encoder"]
    from selfsup.checkpoints import load_method

    method, _ = load_method(checkpoint)
    clips = torch.randn(2, 3, 4, 32, 32)
    maps = method.backbone.feature_map(clips, 3)
    assert maps.shape == (2, 16, 1, 4, 4)  # (B, D_3, T_3, 4, 4): stage 3 of width 4 has 4 x 4 channels, 4 frames / 4
    torch.testing.assert_close(StageMap(method.backbone, 4)(clips), method.dense_features(clips))
    assert main(["eval", "propagate", "--checkpoint", checkpoint, "--stage", "5"]) == 1
    assert "--stage must be 1, 2, 3 or 4" in capsys.readouterr().err

    # an image method, frame by frame: propagation and the clip-label probe
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    from selfsup.video import load_moving_objects

    for i, frame in enumerate(load_moving_objects("train").frames[:, ::8].reshape(-1, 64, 64, 3)):
        Image.fromarray(frame).save(frames / f"{i}.png")
    assert _train(tmp_path / "image", "simclr", frames, "--backbone", "resnet10t", "--small-stem", "--image-size",
                  "32", "--set=backbone_kwargs={channels: [8, 16, 32, 64]}", "--set=proj_hidden_dim=8",
                  "--set=proj_dim=8") == 0
    checkpoint = str(tmp_path / "image" / "checkpoints" / "last.ckpt")
    assert main(["eval", "propagate", "--checkpoint", checkpoint, "--clips", "1", "--random-init", "--radius", "none",
                 "--grid", "none", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["feature_grid"] == result["propagation_grid"] == [4, 4] and result["n_clips"] == 1
    assert result["radius"] is None and result["grid"] is None
    assert result["random_init"] and result["modality"] == "image"
    assert main(["eval", "propagate", "--checkpoint", checkpoint, "--clips", "1", "--stage", "3", "--grid", "none",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["feature_grid"] == [8, 8]  # the small stem's stage 3 at 32 px
    assert main(["eval", "propagate", "--checkpoint", "pixels", "--stage", "3", "--clips", "1"]) == 1
    assert "has no network stages" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", checkpoint, "--data", "moving-objects-motion", "--out",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["framewise"] and result["n_train"] == 8 and result["feature_dim"] == 64
    assert "frame by frame (8 frames averaged)" in result["encoder"]
    capsys.readouterr()

    # bad input: one line each
    for argv, message in ((["--data", "clips"], "per-frame masks: pass --data moving-objects"),
                          (["--clips", "0"], "--clips must be at least 1"),
                          (["--grid", "0"], "--grid must be at least 1 cell"),
                          (["--limit", "2,2"], "--limit does not apply to propagate"),
                          (["--image-size", "16"], "sizes --checkpoint random or pixels")):
        assert main(["eval", "propagate", "--checkpoint", checkpoint, *argv]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
