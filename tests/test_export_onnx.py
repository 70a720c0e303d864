"""`selfsup export --format onnx`: the image encoder as ONNX with a dynamic batch axis, run in onnxruntime against
PyTorch (atol = rtol = 1e-4), and a sidecar whose input size, channels and normalisation reproduce `eval`'s input."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from selfsup.checkpoints import load_method
from selfsup.cli import main
from selfsup.data import load_builtin
from tests.test_cli import TINY, run

VIT = ["--backbone", "timm:vit_tiny_patch16_224", "--batch-size", "16", "--num-workers", "0", "--no-progress",
       "--set", "backbone_kwargs={img_size: 8, patch_size: 2, depth: 2}", "--set", "proj_hidden_dim=32",
       "--set", "pred_hidden_dim=32", "--set", "proj_dim=16"]
ATOL = RTOL = 1e-4  # float32 through another runtime: observed differences are ~1e-6


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A 1-step SimCLR resnet10t on digits (8x8, one channel)."""
    out = tmp_path_factory.mktemp("resnet")
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "1", "--out", str(out), *TINY]) == 0
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A 1-step MoCo v3 with a ViT-Tiny of 2 blocks and 2 px patches on digits."""
    out = tmp_path_factory.mktemp("vit")
    assert main(["train", "mocov3", "--data", "digits", "--max-steps", "1", "--out", str(out), *VIT]) == 0
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("name, flags", [("resnet", ["--format", "onnx"]), ("vit", [])])
def test_onnx_matches_the_pytorch_encoder_at_any_batch_size(request, tmp_path, capsys, name, flags):
    checkpoint = request.getfixturevalue(name)
    out = tmp_path / f"{name}.onnx"  # --format onnx, or the .onnx path alone
    code, stdout, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", out, *flags)
    assert code == 0, err
    assert stdout.splitlines()[-1] == f"wrote {out} and {tmp_path / f'{name}.onnx.json'}"  # after the run's lines
    sidecar = json.loads((tmp_path / f"{name}.onnx.json").read_text())
    assert (sidecar["in_chans"], sidecar["image_size"], sidecar["mean"], sidecar["std"]) == (1, 8, [0.5], [0.5])
    assert (sidecar["input"], sidecar["output"], sidecar["opset"]) == ("images", "features", 18)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    method = load_method(checkpoint)[0]
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        (onnx_out,) = session.run(["features"], {"images": x.numpy()})
        with torch.no_grad():
            expected = method.encoder()(x)
        assert onnx_out.shape == (batch, sidecar["num_features"])
        np.testing.assert_allclose(onnx_out, expected.numpy(), atol=ATOL, rtol=RTOL)

    images = [load_builtin("digits", "test")[i][0] for i in range(4)]  # uint8 (1, 8, 8): the sidecar's recipe
    mean, std = (torch.tensor(sidecar[key]).view(-1, 1, 1) for key in ("mean", "std"))
    x = (torch.stack(images).float() / 255 - mean) / std
    with torch.no_grad():
        expected = method.embed(method.eval_batch(images))  # what `selfsup eval` and `selfsup embed` compute
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], expected.numpy(), atol=ATOL, rtol=RTOL)


def test_the_safetensors_sidecar_gives_the_same_input_recipe(resnet, tmp_path, capsys):
    code, _, err = run(capsys, "export", "--checkpoint", resnet, "--out", tmp_path / "b.safetensors")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "b.json").read_text())
    assert (sidecar["in_chans"], sidecar["image_size"], sidecar["mean"], sidecar["std"]) == (1, 8, [0.5], [0.5])


def _fake_checkpoint(path, modality):
    torch.save({"selfsup": {"method": "bert", "modality": modality, "method_config": {}}}, path)
    return path


@pytest.mark.parametrize("make, out, flags, message", [
    ("text", "bert.onnx", [], ("ONNX export takes image encoders, and bert encodes text: export it as a Hugging "
                               "Face folder (--out FOLDER, without --format onnx)")),
    ("audio", "w2v", ["--format", "onnx"], "ONNX export takes image encoders, and bert encodes audio"),
    ("resnet", "b.safetensors", ["--format", "onnx"], ("simclr exports its backbone to one .onnx file (its .json "
                                                       "sidecar goes beside it), not to '{tmp}/b.safetensors': pass "
                                                       "--out {tmp}/b.onnx")),
    ("resnet", "b.onnx", ["--format", "safetensors"], "pass --out {tmp}/b.safetensors"),
])
def test_what_onnx_cannot_take_is_refused_in_one_line(resnet, tmp_path, capsys, make, out, flags, message):
    checkpoint = resnet if make == "resnet" else _fake_checkpoint(tmp_path / "x.ckpt", make)
    code, _, err = run(capsys, "export", "--checkpoint", checkpoint, "--out", tmp_path / out, *flags)
    assert code == 1 and message.format(tmp=tmp_path) in err, err
    assert err.startswith("selfsup: error:") and err.count("\n") == 1 and not (tmp_path / out).exists()
