import json

import numpy as np
import pytest
import soundfile
import torch

from selfsup.checkpoints import load_method
from selfsup.cli import main

TINY = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "conv_dim": 16, "codewords": 8,
        "codevector_dim": 16, "final_dim": 16, "distractors": 5, "max_seconds": 0.5, "gumbel_decay": 0.9}


@pytest.fixture(scope="module")
def labeled_audio(tmp_path_factory):
    """DIR/<class>/*.wav: 12 clips of 0.6 s per class, a low and a high tone with noise, at 8 kHz (resampled)."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(int(0.6 * 8000)) / 8000
    for name, hz in (("low", 300.0), ("high", 2000.0)):
        (root / name).mkdir()
        for i in range(12):
            wave = 0.4 * np.sin(2 * np.pi * hz * (1 + 0.05 * rng.standard_normal()) * t) + 0.05 * rng.standard_normal(len(t))
            soundfile.write(root / name / f"{i}.wav", wave.astype(np.float32), 8000)
    return root


def _train(tmp_path, data, steps: int, *extra: str) -> int:
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return main(["train", "wav2vec2", "--data", str(data), "--max-steps", str(steps), "--batch-size", "4", "--out",
                 str(tmp_path / "run"), "--no-progress", "--checkpoint-every", "2", "--num-workers", "0", *sets,
                 *extra])


def test_cli_trains_on_an_audio_folder_resumes_evaluates_and_exports(tmp_path, labeled_audio, capsys):
    assert _train(tmp_path, labeled_audio, 2) == 0
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    first = torch.load(checkpoint, weights_only=True)
    assert first["global_step"] == 2
    assert _train(tmp_path, labeled_audio, 4, "--resume") == 0
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 4
    # the Gumbel temperature is a buffer: annealed after every step (2 x 0.9^step) and carried over by the resume
    assert float(first["state_dict"]["method.gumbel_temperature"]) == pytest.approx(2 * 0.9**2)
    assert float(saved["state_dict"]["method.gumbel_temperature"]) == pytest.approx(2 * 0.9**4)
    metrics = (tmp_path / "run/logs/csv/version_1/metrics.csv").read_text()
    assert "perplexity" in metrics and "contrastive" in metrics

    for extra in ([], ["--random-init"]):
        assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", str(labeled_audio), "--k", "3",
                     "--out", str(tmp_path / "knn.json"), *extra]) == 0
        result = json.loads((tmp_path / "knn.json").read_text())
        assert 0.0 <= result["top1"] <= 1.0 and result["classes"] == 2 and result["random_init"] == bool(extra)
    assert len(list(tmp_path.glob("features-*.pt"))) == 2  # the trained encoder's and its twin's, kept for linear
    linear = tmp_path / "linear.json"
    assert main(["eval", "linear", "--checkpoint", str(checkpoint), "--data", str(labeled_audio), "--out",
                 str(linear)]) == 0
    assert len(list(tmp_path.glob("features-*.pt"))) == 2 and json.loads(linear.read_text())["protocol"] == "linear"
    assert main(["eval", "linear", "--checkpoint", "mfcc", "--data", str(labeled_audio),
                 "--out", str(tmp_path / "mfcc.json")]) == 0
    assert json.loads((tmp_path / "mfcc.json").read_text())["top1"] == 1.0  # two tones: MFCCs separate them

    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "encoder")]) == 0
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(str(tmp_path / "encoder")).eval()
    method, _ = load_method(checkpoint)
    waves = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(encoder(waves).last_hidden_state, method.backbone(waves).last_hidden_state)


def test_cli_refuses_mlm_on_audio_and_a_missing_folder(tmp_path, labeled_audio, capsys):
    assert _train(tmp_path, tmp_path / "nowhere", 1) == 1
    assert "nowhere" in capsys.readouterr().err
    assert main(["eval", "mlm", "--checkpoint", "mfcc", "--data", str(labeled_audio)]) == 1
    assert "mlm does not apply to audio" in capsys.readouterr().err
