"""`selfsup embed`: the features `selfsup eval knn` uses, one row per input (path or index, label, embedding), as
Parquet, .npy + paths file, or CSV; image, text and audio checkpoints; bad input in one line."""

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import Subset

from selfsup.cli import main
from selfsup.eval import extract_features, frozen_encoder, open_labeled_split
from tests.audio.conftest import sine, write_audio
from tests.eval.test_sequence import TINY as TINY_BERT
from tests.methods.test_wav2vec2 import TINY as TINY_WAV2VEC2
from tests.test_cli import TINY, run, write_images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 1-step SimCLR resnet10t on digits (8x8, one channel)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "simclr", "--data", "digits", "--max-steps", "1", "--out", str(out), *TINY]) == 0
    return out / "checkpoints" / "last.ckpt"


def read_rows(path):
    """(names, labels or None, embeddings (N, D)) from any of the three formats."""
    if path.suffix == ".parquet":
        table = pq.read_table(path).to_pydict()
        key = "path" if "path" in table else "index"
        return table[key], table.get("label"), np.array(table["embedding"], dtype=np.float32)
    if path.suffix == ".npy":
        lines = [line.split("\t") for line in path.with_suffix(".paths.txt").read_text().splitlines()]
        labels = [line[1] for line in lines] if len(lines[0]) == 2 else None
        return [line[0] for line in lines], labels, np.load(path)
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    labelled = header[1] == "label"
    return ([r[0] for r in rows], [r[1] for r in rows] if labelled else None,
            np.array([r[2 if labelled else 1:] for r in rows], dtype=np.float32))


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".csv"])
def test_rows_are_the_features_eval_uses(checkpoint, tmp_path, capsys, suffix):
    out = tmp_path / f"emb{suffix}"
    code, stdout, err = run(capsys, "embed", "--checkpoint", checkpoint, "--data", "digits", "--split", "test",
                            "--batch-size", 100, "--out", out)
    assert code == 0, err
    test_set = open_labeled_split("image", "digits")[1]
    features, labels = extract_features(frozen_encoder(str(checkpoint)), test_set)
    names, written_labels, embeddings = read_rows(out)
    assert [int(n) for n in names] == list(range(len(test_set)))
    assert written_labels == [test_set.classes[i] for i in labels.tolist()]
    np.testing.assert_array_equal(embeddings, features.numpy())  # CSV keeps 9 digits: float32 exactly
    assert stdout.startswith(f"embed {len(test_set)} x {features.shape[1]} | simclr resnet10t | digits (test) with "
                             "labels |")


def test_a_folder_gives_every_image_by_path_and_split_gives_eval_labels(checkpoint, tmp_path, capsys):
    for split, n in (("train", 5), ("test", 3)):
        for cls in ("cat", "dog"):
            write_images(tmp_path / "pets" / split / cls, n, seed=n)
    code, _, err = run(capsys, "embed", "--checkpoint", checkpoint, "--data", tmp_path / "pets", "--out",
                       tmp_path / "all.npy")
    assert code == 0, err
    every_path, labels, every_embedding = read_rows(tmp_path / "all.npy")
    assert sorted(every_path) == sorted(str(p) for p in (tmp_path / "pets").rglob("*.png")) and labels is None
    assert every_embedding.shape == (16, 128)

    code, _, err = run(capsys, "embed", "--checkpoint", checkpoint, "--data", tmp_path / "pets", "--split", "test",
                       "--out", tmp_path / "test.parquet")
    assert code == 0, err
    paths, labels, embeddings = read_rows(tmp_path / "test.parquet")
    test_images = (tmp_path / "pets" / "test").rglob("*.png")
    assert sorted(zip(paths, labels)) == sorted((str(p), p.parent.name) for p in test_images)  # label: class folder
    # the same images in batches of another size: equal up to float rounding (the kernels depend on the batch)
    np.testing.assert_allclose(embeddings, every_embedding[[every_path.index(p) for p in paths]], rtol=1e-5, atol=1e-6)


def test_a_text_checkpoint_embeds_through_its_method(tmp_path, capsys):
    out = tmp_path / "bert"
    sets = [f"--set={k}={v}" for k, v in {**TINY_BERT, "max_len": 16}.items()]  # short verses: a cheap pass
    assert main(["train", "bert", "--max-steps", "1", "--batch-size", "8", "--limit-samples", "64", "--out", str(out),
                 "--no-progress", *sets]) == 0
    code, _, err = run(capsys, "embed", "--checkpoint", out / "checkpoints" / "last.ckpt", "--split", "test",
                       "--out", tmp_path / "verses.npy")
    assert code == 0, err
    names, labels, embeddings = read_rows(tmp_path / "verses.npy")
    test_set = open_labeled_split("text", "bible-genres")[1]
    features, genres = extract_features(frozen_encoder(str(out / "checkpoints" / "last.ckpt")),
                                        Subset(test_set, range(50)))
    assert embeddings.shape == (len(test_set), TINY_BERT["hidden"]) and names[:3] == ["0", "1", "2"]
    assert labels[:50] == [test_set.classes[i] for i in genres.tolist()]
    np.testing.assert_allclose(embeddings[:50], features.numpy(), atol=1e-6)  # batches of 64 against one of 50


def test_an_audio_checkpoint_embeds_a_class_folder_by_path(tmp_path, capsys):
    for name, hz in (("low", 300.0), ("high", 2000.0)):
        for i in range(4):
            write_audio(tmp_path / "tones" / name / f"{i}.wav", sine(hz * (1 + 0.02 * i), 0.6, 8000), 8000)
    sets = [f"--set={k}={v}" for k, v in TINY_WAV2VEC2.items()]
    assert main(["train", "wav2vec2", "--data", str(tmp_path / "tones"), "--max-steps", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "run"), "--no-progress", "--num-workers", "0", *sets]) == 0
    code, _, err = run(capsys, "embed", "--checkpoint", tmp_path / "run" / "checkpoints" / "last.ckpt", "--data",
                       tmp_path / "tones", "--out", tmp_path / "clips.parquet")
    assert code == 0, err
    names, labels, embeddings = read_rows(tmp_path / "clips.parquet")
    assert len(names) == 6 and labels == [name.split("/")[-2] for name in names]  # the train side: 3 of 4 per class
    assert embeddings.shape == (6, TINY_WAV2VEC2["hidden"]) and np.isfinite(embeddings).all()


@pytest.mark.parametrize("make, out, message", [
    (None, "emb.txt", "has an unknown extension '.txt'; pass FILE.parquet, FILE.npy (with FILE.paths.txt"),
    (None, "missing/emb.csv", "the folder of --out '{tmp}/missing/emb.csv' does not exist: create"),
    ("classifier", "emb.csv", "is a fine-tuned classifier, not a pretraining checkpoint"),
    ("plain", "emb.csv", "is not a selfsup checkpoint (no 'selfsup' entry)"),
    ("text", "emb.csv", "is not a selfsup checkpoint (not a PyTorch checkpoint archive)"),
    ("random", "emb.csv", "embed takes a .ckpt file written by `selfsup train`; 'random' is an evaluation baseline"),
])
def test_bad_input_ends_in_one_line(checkpoint, tmp_path, capsys, make, out, message):
    path = {None: checkpoint, "random": "random", "text": tmp_path / "notes.txt"}.get(make, tmp_path / "x.ckpt")
    if make == "classifier":
        saved = torch.load(checkpoint, weights_only=True)
        torch.save({**saved, "selfsup": {**saved["selfsup"], "kind": "classifier"}}, path)
    elif make == "plain":
        torch.save({"state_dict": {}}, path)
    elif make == "text":
        path.write_text("hello")
    code, _, err = run(capsys, "embed", "--checkpoint", path, "--data", "digits", "--out", tmp_path / out)
    assert code == 1 and message.format(tmp=tmp_path) in err, err
    assert err.startswith("selfsup: error:") and err.count("\n") == 1 and not list(tmp_path.glob("emb*"))


def test_without_data_it_embeds_what_the_checkpoint_was_trained_on(checkpoint, tmp_path, capsys):
    code, stdout, err = run(capsys, "embed", "--checkpoint", checkpoint, "--out", tmp_path / "e.npy")
    assert code == 0, err
    names, labels, embeddings = read_rows(tmp_path / "e.npy")
    train, _ = open_labeled_split("image", "digits", 0)
    assert "digits" in stdout and len(names) == len(train) == len(embeddings) and labels is not None
