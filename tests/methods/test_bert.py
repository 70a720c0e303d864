import json

import pytest
import torch

from selfsup.checkpoints import load_method
from selfsup.cli import main
from selfsup.methods import make_config, method_class
from selfsup.text import LABEL_KEY, bible_documents, pair_examples, tokenizer_to_json, train_tokenizer

TINY = {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "max_len": 48, "vocab_size": 300}


def _method(name: str, documents):
    cls = method_class(name)
    texts = [s for d in documents for s in d.segments]
    tokenizer = train_tokenizer(texts, cls.tokenizer_kind, TINY["vocab_size"])
    return cls(make_config(name, **TINY), {"tokenizer": tokenizer_to_json(tokenizer), "task": cls.task})


@pytest.fixture(scope="module")
def genesis():
    return bible_documents()[:12]


@pytest.mark.parametrize("name", ["bert", "albert"])
def test_loss_is_the_hf_pretraining_loss_over_all_positions(name, genesis):
    """The MLM head runs on the selected positions only; HF's own loss runs it on every position and ignores
    labels of -100: both must give the same masked-LM + NSP/SOP cross-entropy."""
    torch.manual_seed(0)
    method = _method(name, genesis).eval()  # no dropout: the two forward passes see the same network
    cls = type(method)
    examples = pair_examples(genesis, method.tokenizer, cls.task, TINY["max_len"], seed=0)
    batch = method.collate([(e,) for e in examples[:8]])
    assert (batch["labels"] != -100).any() and set(batch[LABEL_KEY[cls.task]].tolist()) <= {0, 1}
    ours = method.training_step(batch)
    reference = method.model(**batch).loss
    torch.testing.assert_close(ours["loss"], reference)
    torch.testing.assert_close(ours["loss"], ours["mlm_loss"] + ours[f"{cls.task}_loss"])


def test_albert_shares_one_layer_and_factorises_the_embedding(genesis):
    method = _method("albert", genesis)
    encoder = method.backbone
    assert encoder.embeddings.word_embeddings.weight.shape == (len(method.tokenizer), 128)  # V x E
    assert encoder.encoder.embedding_hidden_mapping_in.weight.shape == (32, 128)  # E -> H
    assert len(encoder.encoder.albert_layer_groups) == 1
    assert len(encoder.encoder.albert_layer_groups[0].albert_layers) == 1  # every pass reuses these weights


def _train(tmp_path, name: str, data: str, steps: int, *extra: str) -> int:
    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    return main(["train", name, "--data", data, "--max-steps", str(steps), "--batch-size", "8", "--out",
                 str(tmp_path / "run"), "--no-progress", "--checkpoint-every", "2", *sets, *extra])


def test_cli_trains_on_a_text_folder_resumes_and_exports(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, document in enumerate(bible_documents()[40:52]):  # 12 chapters of Exodus as .txt files
        (corpus / f"{i}.txt").write_text("\n".join(document.segments) + "\n")
    assert _train(tmp_path, "bert", str(corpus), 2) == 0
    saved = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 and "tokenizer" in saved["selfsup"]["data_meta"]
    assert _train(tmp_path, "bert", str(corpus), 4, "--resume") == 0
    method, meta = load_method(tmp_path / "run/checkpoints/last.ckpt")
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    assert meta["data_meta"] == saved["selfsup"]["data_meta"]  # the resumed run kept its tokenizer
    assert main(["export", "--checkpoint", str(tmp_path / "run/checkpoints/last.ckpt"), "--out",
                 str(tmp_path / "encoder")]) == 0
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(str(tmp_path / "encoder")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "encoder"))
    inputs = tokenizer(["Moses went up the mountain."], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(encoder(**inputs).last_hidden_state, method.backbone(**inputs).last_hidden_state)
    assert json.loads((tmp_path / "encoder/selfsup.json").read_text())["method"] == "bert"


def test_cli_refuses_a_missing_text_path(tmp_path, capsys):
    assert _train(tmp_path, "albert", str(tmp_path / "nowhere"), 1) == 1
    assert "no text at" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "albert"])
def test_pretraining_lowers_the_masked_lm_loss_on_held_out_chapters(name):
    """60 AdamW steps on 40 chapters of Genesis and Exodus: the MLM loss on 10 other chapters falls well below
    the random-init network's, which sits near log(V) = 5.7 (60 steps: about 5.1)."""
    documents = bible_documents()
    train_docs, held_out = documents[:40], documents[60:70]
    torch.manual_seed(0)
    method = _method(name, train_docs)
    cls = type(method)

    train = [(e,) for e in pair_examples(train_docs, method.tokenizer, cls.task, TINY["max_len"], seed=0)]
    test = [(e,) for e in pair_examples(held_out, method.tokenizer, cls.task, TINY["max_len"], seed=1)][:64]

    def held_out_mlm() -> float:
        method.eval()
        torch.manual_seed(1)  # the same masks every time
        with torch.no_grad():
            return float(method.training_step(method.collate(test))["mlm_loss"])

    before = held_out_mlm()
    optimizer = torch.optim.AdamW(method.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    method.train()
    for _ in range(60):
        batch = [train[i] for i in torch.randint(len(train), (16,), generator=generator)]
        loss = method.training_step(method.collate(batch))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_mlm()
    assert after < before - 0.4, (before, after)
