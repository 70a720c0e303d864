import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from selfsup.eval import FrozenEncoder, extract_features
from selfsup.eval.features import Encoder
from selfsup.eval.finetune import Classifier, FinetuneModule, predict, train_loader
from selfsup.eval.run import top1
from selfsup.methods import build
from selfsup.methods.bert import PooledText
from selfsup.text import (GENRES, Document, bible_verses, build_albert, build_bert, genre_split, masked_token_accuracy,
                          pair_examples, texts_labels, tfidf_baseline, tokenizer_to_json, verse_documents)
from selfsup.train.module import make_trainer

SINGLE_BOOK = {"Acts", "Apocalyptic"}


def tiny_bert(tok, seed=0):
    torch.manual_seed(seed)
    return build_bert(len(tok), hidden=32, layers=1, heads=2, intermediate=64, max_len=64)


def text_batch(tok, max_len=128):
    return lambda texts: dict(tok(list(texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt"))


def encode(model, tok, texts, pooling="mean", batch_size=128):
    """Frozen features (N, H) of texts through the one evaluation path: the pooled final states of `model`."""
    base = getattr(model, "base_model", model)
    pooled = PooledText(base, pooling, [tok.cls_token_id, tok.sep_token_id])
    encoder = FrozenEncoder("text", "test", text_batch(tok), pooled, module=base)
    return extract_features(encoder, [(t, 0) for t in texts], batch_size)[0]


def probe_features(train_x, train_y, test_x, test_y, k=20):
    return {p: top1(p, train_x, train_y, test_x, test_y, k) for p in ("knn", "linear")}


def probe_genre(model, tok, train, test, pooling="mean", k=20):
    return probe_features(encode(model, tok, train[0], pooling), train[1], encode(model, tok, test[0], pooling),
                          test[1], k)


def split_summary(train, test):
    """Per genre: verses and books on each side."""
    return {g: {"train_verses": sum(v.genre == g for v in train), "test_verses": sum(v.genre == g for v in test),
                "train_books": len({v.book for v in train if v.genre == g}),
                "test_books": len({v.book for v in test if v.genre == g})} for g in GENRES}


def words(tok, n):
    """n distinct whole words of the tokenizer's vocabulary (one token each), in a fixed order."""
    vocab = sorted(t for t in tok.get_vocab() if t.isalpha() and t.islower() and len(t) > 2)
    return vocab[:n]


def toy_task(tok, n_per_class, seed=0):
    """Texts of 4..12 words drawn from one of two disjoint word sets; the label says which set."""
    rng, vocab = random.Random(seed), words(tok, 40)
    sets = (vocab[:20], vocab[20:])
    texts, labels = [], []
    for i in range(2 * n_per_class):
        texts.append(" ".join(rng.choices(sets[i % 2], k=rng.randint(4, 12))))
        labels.append(i % 2)
    return texts, torch.tensor(labels)


# ---- split ----------------------------------------------------------------------------------------------------

def test_split_is_by_book_with_every_genre_on_both_sides():
    verses = bible_verses()
    train, test = genre_split(seed=0)
    assert len(train) + len(test) == len(verses) and set(train).isdisjoint(test)
    shared_books = {v.book for v in train} & {v.book for v in test}
    assert shared_books == {"Acts", "Revelation"}  # the single-book genres, split by chapters
    assert {(v.book, v.chapter) for v in train}.isdisjoint({(v.book, v.chapter) for v in test})
    for book in shared_books:
        held_out = sorted({v.chapter for v in test if v.book == book})
        assert held_out == list(range(held_out[0], held_out[-1] + 1))  # one run of chapters
    summary = split_summary(train, test)
    assert set(summary) == set(GENRES)
    for genre, s in summary.items():
        assert s["train_verses"] > 0 and s["test_verses"] > 0
        assert 0.12 < s["test_verses"] / (s["train_verses"] + s["test_verses"]) < 0.35
        assert s["train_books"] >= 1 and s["test_books"] >= 1
        if genre not in SINGLE_BOOK:
            assert s["train_books"] + s["test_books"] == len({v.book for v in verses if v.genre == genre})


def test_split_is_seeded_and_limit_keeps_genre_shares():
    first, again, other = genre_split(seed=3), genre_split(seed=3), genre_split(seed=4)
    assert first == again and first != other
    held_out_books = [{v.book for v in split[1] if v.genre not in SINGLE_BOOK} for split in (first, other)]
    assert held_out_books[0] != held_out_books[1]  # the seed picks the books, not only the chapters
    train, test = genre_split(seed=3, limit=(2000, 500))
    assert abs(len(train) - 2000) <= 8 and abs(len(test) - 500) <= 8
    assert set(train) <= set(first[0]) and set(test) <= set(first[1])
    full, small = Counter(v.genre for v in first[1]), Counter(v.genre for v in test)
    assert set(small) == set(GENRES)
    assert all(abs(small[g] / len(test) - full[g] / len(first[1])) < 0.01 for g in GENRES)
    assert train == sorted(train, key=verses_order())  # canon order kept


def verses_order():
    position = {v: i for i, v in enumerate(bible_verses())}
    return position.__getitem__


def test_verse_documents_are_the_chapters(documents):
    verses = [v for v in bible_verses() if v.book == "Genesis" and v.chapter <= 30]
    assert verse_documents(verses) == documents


# ---- features -------------------------------------------------------------------------------------------------

def test_mean_pooling_ignores_padding_and_special_tokens(tokenizers):
    tok = tokenizers["wordpiece"]
    model = tiny_bert(tok)
    model.train()
    short, long = "And God said", "In the beginning God created the heavens and the earth, and it was so."
    alone = encode(model, tok, [short], "mean")  # in eval mode although the model is training: no dropout
    both = encode(model, tok, [long, short], "mean", batch_size=2)  # the short one padded beside the long one
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    batch = tok([short], return_tensors="pt")
    model.eval()
    hidden = model.bert(**batch).last_hidden_state
    assert torch.allclose(alone[0], hidden[0, 1:-1].mean(0), atol=1e-5)  # [CLS] and [SEP] left out
    assert not torch.allclose(alone[0], hidden[0].mean(0), atol=1e-4)
    model.train()
    encode(model, tok, [short])
    assert model.training  # the caller's mode is restored


def test_cls_pooling_is_position_0_in_the_input_order(tokenizers):
    tok = tokenizers["wordpiece"]
    model = tiny_bert(tok).eval()
    texts = ["In the beginning God created the heavens and the earth.", "And it was so.", "Let there be light"]
    features = encode(model.bert, tok, texts, "cls", batch_size=2)  # sorted by length inside: orders differ
    for text, row in zip(texts, features):
        hidden = model.bert(**tok([text], return_tensors="pt")).last_hidden_state
        assert torch.allclose(row, hidden[0, 0], atol=1e-5)
    assert features.shape == (3, 32) and features.dtype == torch.float32


# ---- masked-token accuracy ------------------------------------------------------------------------------------

class Oracle(nn.Module):
    """Stands in for BertForPreTraining: MLM logits one-hot at a fixed token (or at the input, echo=True); NSP
    logits preferring label 0."""

    def __init__(self, vocab_size: int, token: int = 0, echo: bool = False):
        super().__init__()
        self.vocab_size, self.token, self.echo = vocab_size, token, echo
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, token_type_ids, attention_mask):
        target = input_ids if self.echo else torch.full_like(input_ids, self.token)
        logits = nn.functional.one_hot(target, self.vocab_size).float()  # (B, L, V)
        nsp = torch.tensor([[1.0, 0.0]]).expand(len(input_ids), 2)  # (B, 2): always "is next"
        return SimpleNamespace(prediction_logits=logits, seq_relationship_logits=nsp)


def test_masked_accuracy_is_1_for_the_right_token_and_0_for_a_wrong_one(tokenizers):
    tok = tokenizers["wordpiece"]
    the, god = tok.convert_tokens_to_ids(["the", "god"])
    docs = [Document(f"d{i}", tuple("the " * (3 + j % 5) for j in range(12))) for i in range(6)]
    right = masked_token_accuracy(Oracle(len(tok), the), tok, docs, max_len=32)
    wrong = masked_token_accuracy(Oracle(len(tok), god), tok, docs, max_len=32)
    examples = pair_examples(docs, tok, "nsp", max_len=32, seed=0)
    assert right["mlm"] == right["mlm_masked_only"] == 1.0 and wrong["mlm"] == wrong["mlm_masked_only"] == 0.0
    assert right["examples"] == len(examples) and right["masked_tokens"] > 20
    n_tokens = sum(len(e["input_ids"]) - 3 for e in examples)
    assert abs(right["masked_tokens"] / n_tokens - 0.15) < 0.05
    assert right["nsp"] == pytest.approx(sum(e["next_sentence_label"] == 0 for e in examples) / len(examples))


def test_masked_accuracy_counts_only_selected_positions(documents, tokenizers):
    tok = tokenizers["wordpiece"]
    echo = masked_token_accuracy(Oracle(len(tok), echo=True), tok, documents[:10], max_len=64)
    assert 0.07 < echo["mlm"] < 0.13  # the 10% of selected tokens left unchanged (plus rare random hits)
    assert echo["mlm_masked_only"] == 0.0  # it predicts [MASK], which is never a label
    assert echo["masked_tokens"] > 800


@pytest.mark.parametrize("build, task", [(build_bert, "nsp"), (build_albert, "sop")])
def test_masked_accuracy_of_random_models_is_low_and_seeded(documents, tokenizers, build, task):
    tok = tokenizers["wordpiece"]
    torch.manual_seed(0)
    model = build(len(tok), hidden=32, layers=1, heads=2, intermediate=64, max_len=64)
    result = masked_token_accuracy(model, tok, documents[:6], max_len=64, seed=1)
    assert set(result) == {"mlm", "mlm_masked_only", task, "masked_tokens", "examples"}
    assert result["mlm_masked_only"] < 0.05 and result["mlm"] < 0.2 and 0 <= result[task] <= 1
    assert masked_token_accuracy(model, tok, documents[:6], max_len=64, seed=1) == result


# ---- genre classifiers ----------------------------------------------------------------------------------------

def test_tfidf_baseline_finds_genres():
    train, test = genre_split(seed=0, limit=(3000, 1000))
    chance = max(Counter(v.genre for v in test).values()) / len(test)  # always the commonest genre
    accuracy = tfidf_baseline(*texts_labels(train), *texts_labels(test))
    assert accuracy > chance + 0.25


def test_probe_is_perfect_on_separable_features():
    torch.manual_seed(0)
    centres = torch.randn(3, 16) * 5
    labels = torch.arange(3).repeat(40)  # (120,)
    features = centres[labels] + torch.randn(120, 16) * 0.1
    result = probe_features(features[:90], labels[:90], features[90:], labels[90:], k=5)
    assert result == {"knn": 1.0, "linear": 1.0}
    shuffled = probe_features(features[:90], labels[:90][torch.randperm(90)], features[90:], labels[90:], k=5)
    assert shuffled["knn"] < 0.8 and shuffled["linear"] < 0.8


class BagOfTokens(nn.Module):
    """An 'encoder' whose hidden state at each position is the one-hot of the token there."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(torch.eye(vocab_size))

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return SimpleNamespace(last_hidden_state=self.embedding(input_ids))


def test_probe_genre_encodes_and_classifies(tokenizers):
    tok = tokenizers["wordpiece"]
    texts, labels = toy_task(tok, 40)
    train, test = (texts[:60], labels[:60]), (texts[60:], labels[60:])
    assert probe_genre(BagOfTokens(len(tok)), tok, train, test, "mean", k=5) == {"knn": 1.0, "linear": 1.0}
    result = probe_genre(tiny_bert(tok), tok, train, test, "cls", k=5)
    assert set(result) == {"knn", "linear"} and all(0 <= a <= 1 for a in result.values())


def test_the_fine_tuning_loop_learns_a_toy_task_on_a_bert(tokenizers, tmp_path):
    tok = tokenizers["wordpiece"]
    texts, labels = toy_task(tok, 60)
    torch.manual_seed(0)
    method = build("bert", {"tokenizer": tokenizer_to_json(tok), "task": "nsp"}, hidden=32, layers=1, heads=2,
                   intermediate=64, max_len=64, vocab_size=len(tok))
    encoder = Encoder(method.finetune_encoder(), method.eval_batch, "toy")
    model = Classifier(encoder, 32, 2)
    train = [(t, int(y)) for t, y in zip(texts[:80], labels[:80])]
    test = [(t, int(y)) for t, y in zip(texts[80:], labels[80:])]
    trainer = make_trainer(tmp_path, None, 20, accelerator="cpu", progress=False)
    module = FinetuneModule(model, {}, "adamw", 2e-3, 0.01, 0.9, 0.1)
    trainer.fit(module, train_loader(train, encoder, None, False, 16, 0))
    predicted = predict(trainer, module, test).cpu()
    assert float((predicted == labels[80:]).float().mean()) >= 0.95
