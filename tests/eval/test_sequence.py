import json

import pytest
import torch

from selfsup.cli import main
from selfsup.eval import evaluate
from selfsup.eval.features import checkpoint_modality
from selfsup.text import bible_verses, genre_split

TINY = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "max_len": 48, "vocab_size": 300}


@pytest.fixture(scope="module")
def bert_checkpoint(tmp_path_factory):
    """A BERT trained 2 steps on 30 chapters of the built-in Bible (--limit-samples keeps it small)."""
    out = tmp_path_factory.mktemp("bert") / "run"
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["train", "bert", "--max-steps", "2", "--batch-size", "8", "--limit-samples", "64", "--out", str(out),
                 "--no-progress", *sets]) == 0
    return str(out / "checkpoints" / "last.ckpt")


def test_bible_pretraining_never_reads_the_held_out_books(bert_checkpoint):
    from selfsup.methods.bert import pretraining_documents

    _, test = genre_split(seed=0)
    held_out = {(v.book, v.chapter) for v in test}
    documents = pretraining_documents("bible")
    assert documents and not any((d.book, int(d.name.rsplit(" ", 1)[1])) in held_out for d in documents)
    verses_read = sum(len(d.segments) for d in documents)
    assert verses_read == len(bible_verses()) - len(test)


@pytest.mark.parametrize("protocol", ["knn", "linear", "mlm"])
def test_text_protocols_on_the_checkpoint_and_its_random_twin(tmp_path, bert_checkpoint, protocol):
    assert checkpoint_modality(bert_checkpoint) == "text"
    results = []
    for extra in ([], ["--random-init"]):
        out = tmp_path / f"{protocol}{len(extra)}.json"
        assert main(["eval", protocol, "--checkpoint", bert_checkpoint, "--limit", "200,80", "--out", str(out),
                     *extra]) == 0
        results.append(json.loads(out.read_text()))
    trained, twin = results
    assert trained["data"] == "bible-genres" and not trained["random_init"] and twin["random_init"]
    assert 0.0 <= trained["top1"] <= 1.0 and 0.0 <= twin["top1"] <= 1.0
    if protocol == "mlm":  # the held-out verses (80 of them here), masked the same way for both
        assert trained["masked_tokens"] == twin["masked_tokens"] > 50
    else:
        assert trained["n_train"] == twin["n_train"] and 180 <= trained["n_train"] <= 220


def test_random_init_twin_has_the_checkpoints_shape_but_not_its_weights(bert_checkpoint):
    from selfsup.checkpoints import load_method

    trained, _ = load_method(bert_checkpoint)
    twin, _ = load_method(bert_checkpoint, weights=False)
    assert trained.tokenizer.get_vocab() == twin.tokenizer.get_vocab()
    for (name, a), (_, b) in zip(trained.state_dict().items(), twin.state_dict().items()):
        assert a.shape == b.shape, name
    word = "model.bert.embeddings.word_embeddings.weight"
    assert not torch.equal(trained.state_dict()[word], twin.state_dict()[word])


def test_tfidf_baseline_and_its_refusals(tmp_path, capsys):
    result = evaluate("linear", "tfidf", limit=(2000, 600), out=str(tmp_path / "tfidf.json"))
    assert result["top1"] > 0.4  # 8 genres, the commonest 0.21 of the verses
    assert main(["eval", "knn", "--checkpoint", "tfidf"]) == 1
    assert "tfidf baseline is a linear classifier" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", "tfidf", "--data", "fashion-mnist"]) == 1
    assert "bible-genres" in capsys.readouterr().err


def test_finetune_on_text_from_the_cli(tmp_path, bert_checkpoint):
    out = tmp_path / "finetune.json"
    assert main(["eval", "finetune", "--checkpoint", bert_checkpoint, "--limit", "200,80", "--max-steps", "3",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "finetune" and result["steps"] == 3 and 0.0 <= result["top1"] <= 1.0


def test_image_checkpoints_refuse_mlm(capsys):
    assert main(["eval", "mlm", "--checkpoint", "random"]) == 1
    assert "mlm evaluates text models" in capsys.readouterr().err
