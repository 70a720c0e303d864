import json

import pytest
import torch

from selfsup.checkpoints import load_exported, load_method, read_checkpoint
from selfsup.cli import main
from selfsup.methods import build
from tests.resume_check import resumed_like_uninterrupted
from tests.video.files import write_tiny_moving_objects, write_video

TINY = {"width": 4, "blocks": 1, "frames": 4, "stride": 1, "size": 32, "boxes": 4, "proj_hidden_dim": 16,
        "proj_dim": 8, "decoder_dim": 8, "decoder_heads": 2, "decoder_layers": 1}
META = {"clip_shape": [3, 4, 32, 32]}


def tiny(**overrides):
    torch.manual_seed(0)
    return build("constcl", META, **{**TINY, **overrides})


def test_region_features_are_roi_align_of_the_time_mean():
    method = tiny()
    x = torch.arange(4.0).view(1, 1, 1, 1, 4).expand(2, 1, 3, 4, 4)  # channel 0: the map's column index
    y = torch.arange(4.0).view(1, 1, 1, 4, 1).expand(2, 1, 3, 4, 4)  # channel 1: its row index
    t = torch.arange(3.0).view(1, 1, 3, 1, 1).expand(2, 1, 3, 4, 4)  # channel 2: time, 1 on average
    maps = torch.cat([x, y, t], dim=1)  # (B=2, D=3, T'=3, 4, 4): the map of a 32 px clip, 8 px per cell
    boxes = torch.tensor([[[8.0, 8.0, 24.0, 16.0], [4.0, 12.0, 20.0, 28.0]],
                          [[12.0, 4.0, 20.0, 20.0], [10.0, 10.0, 22.0, 22.0]]])  # (B, K=2, 4) pixels
    h = method.regions(maps, boxes)  # (B, K, D)
    # bilinear sampling of a linear map is exact: a box's mean is the map at its centre (cell c's centre at 8c + 4)
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # (B, K, 2) x, y in pixels
    torch.testing.assert_close(h[..., :2], (centre - 4) / 8)
    torch.testing.assert_close(h[..., 2], torch.ones(2, 2))


def test_a_training_step_reaches_every_part_and_logs_both_losses():
    method = tiny().train()
    g = torch.Generator().manual_seed(1)
    batch = {"clips1": torch.randn(3, 3, 4, 32, 32, generator=g), "clips2": torch.randn(3, 3, 4, 32, 32, generator=g),
             "boxes": torch.tensor([[2.0, 2.0, 20.0, 20.0]]).repeat(3, 4, 1)}
    out = method.training_step(batch)
    assert set(out) == {"loss", "global", "local"} and all(torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss"], out["global"] + 0.001 * out["local"])
    out["loss"].backward()
    parts = {"backbone": method.backbone.stem[0].weight, "global head": method.projection_head[0].weight,
             "region projection": method.region_projection.weight,
             "context projection": method.context_projection.weight,
             "reconstructor": method.reconstructor.layers[0].multihead_attn.in_proj_weight}
    for name, p in parts.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    clips = [torch.randint(0, 256, (4, 40, 50, 3), dtype=torch.uint8) for _ in range(2)]
    batch = method.eval_batch(clips)
    assert batch.shape == (2, 3, 4, 32, 32)
    assert method.eval().embed(batch).shape == (2, 32) and method.dense_features(batch).shape == (2, 32, 2, 2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """4 usable videos of 12 frames, one too short for a clip of 4 frames (3), one that is not a video."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(4):
        write_video(root / ("sub" if i % 2 else ".") / f"v{i}.mp4", frames=12, size=(56, 40), seed=i)
    write_video(root / "short.mp4", frames=3)
    (root / "broken.webm").write_bytes(b"\x1aE\xdf\xa3 not really webm")
    return root


def _train(run, data, steps, *extra):
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return main(["train", "constcl", "--data", str(data), "--max-steps", str(steps), "--batch-size", "4", "--out",
                 str(run), "--no-progress", "--checkpoint-every", "2", "--num-workers", "0", *sets, *extra])


@pytest.mark.slow
def test_cli_trains_on_a_video_folder_resumes_exactly_and_exports(tmp_path, videos, capsys):
    run = tmp_path / "run"
    assert _train(run, videos, 4) == 0
    out = capsys.readouterr().out
    assert "12 examples from" in out and "(2 unusable files skipped)" in out  # 4 videos x 12 // 4 frames
    full, _ = resumed_like_uninterrupted("constcl", run, step=2)
    assert full["global_step"] == 4 and full["selfsup"]["data_meta"]["clip_shape"] == [3, 4, 32, 32]
    metrics = (run / "logs/csv/version_0/metrics.csv").read_text()
    assert "global" in metrics and "local" in metrics

    checkpoint = run / "checkpoints" / "last.ckpt"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "enc.safetensors")]) == 0
    sidecar = json.loads((tmp_path / "enc.json").read_text())
    assert sidecar["kwargs"] == {"arch": "r3d_18", "width": 4, "layers": [1, 1, 1, 1]}
    assert sidecar["clip_shape"] == [3, 4, 32, 32] and sidecar["num_features"] == 32
    method, _ = load_method(checkpoint)
    exported = load_exported(tmp_path / "enc.safetensors").eval()
    clips = method.eval_batch([torch.randint(0, 256, (4, 32, 40, 3), dtype=torch.uint8) for _ in range(3)])
    with torch.no_grad():
        torch.testing.assert_close(exported(clips), method.embed(clips))
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "enc.onnx")]) == 1
    assert "ONNX export takes image encoders" in capsys.readouterr().err


def test_cli_refuses_folders_without_usable_videos_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "run", tmp_path / "empty", 1) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "contains no video files" in err and "Traceback" not in err
    write_video(tmp_path / "short" / "a.mp4", frames=3)
    assert _train(tmp_path / "run", tmp_path / "short", 1) == 1
    err = capsys.readouterr().err.strip()
    assert "too short for one clip" in err.splitlines()[-1] and "Traceback" not in err
    assert _train(tmp_path / "run", tmp_path / "nowhere", 1) == 1
    assert "no videos at that path" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, message", [("size=8", "size must be at least 16"),
                                             ("boxes=0", "boxes must be at least 1"),
                                             ("local_temperature=0", "local_temperature must be positive"),
                                             ("decoder_heads=3", "multiple of decoder_heads 3"),
                                             ("width=6", "multiple of 4"), ("frames=0", "frames must be at least 1")])
def test_options_the_network_cannot_take_are_refused_in_one_line(tmp_path, videos, capsys, option, message):
    assert _train(tmp_path / "run", videos, 1, f"--set={option}") == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("flags, message", [(["--channels-last"], "drop --channels-last"),
                                            (["--bands", "1,2"], "drop --bands")])
def test_image_only_run_options_are_refused_in_one_line(tmp_path, videos, capsys, flags, message):
    assert _train(tmp_path / "run", videos, 1, *flags) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_checkpoint_records_the_clip_shape(tmp_path, videos):
    assert _train(tmp_path / "run", videos, 1, "--set=width=8") == 0
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["selfsup"]["modality"] == "video"
    assert checkpoint["selfsup"]["train"]["channels_last"] is False  # a 4-D layout: never for 5-D clips, even on GPUs
    assert checkpoint["state_dict"]["method.backbone.stem.0.weight"].shape == (8, 3, 3, 7, 7)


@pytest.mark.slow
def test_trains_on_moving_objects_and_is_probed_on_its_clip_labels(tmp_path, capsys):
    write_tiny_moving_objects(train=16, test=8)
    run = tmp_path / "run"
    assert _train(run, "moving-objects", 2) == 0
    assert "128 examples from moving-objects" in capsys.readouterr().out  # 16 clips x 32 // 4 frames (span)
    checkpoint = run / "checkpoints" / "last.ckpt"
    for data, classes in (("moving-objects", 10), ("moving-objects-motion", 4)):
        for extra in ([], ["--random-init"]):
            out = tmp_path / f"{data}{len(extra)}.json"
            assert main(["eval", "linear", "--checkpoint", str(checkpoint), "--data", data, "--out", str(out),
                         *extra]) == 0
            result = json.loads(out.read_text())
            assert result["modality"] == "video" and result["n_train"] == 16 and result["n_test"] == 8
            assert 0.0 <= result["top1"] <= 1.0 and result["random_init"] == bool(extra)
            assert result["feature_dim"] == 32 and result["classes"] <= classes
    assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", "clips"]) == 1
    assert "pass moving-objects or moving-objects-motion" in capsys.readouterr().err
