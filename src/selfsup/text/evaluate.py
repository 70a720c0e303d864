"""What a BERT/ALBERT encoder learned: masked-token accuracy on held-out text, and the genre of a Bible verse (8
classes) from frozen features (kNN, linear probe) or by fine-tuning, next to a TF-IDF + logistic-regression baseline.

Rules chosen here:
- genre_split holds out whole books (a book is on one side only), so a probe cannot succeed by recognising a
  verse's neighbours or a book's names; the two single-book genres (Acts, Revelation) hold out a block of chapters.
- mean pooling averages the final hidden states of the text's own tokens: [CLS], [SEP] and padding are left out,
  so "mean" and "cls" are disjoint views of the input ([CLS] is what NSP/SOP trains).
- masked-token accuracy counts every position the masking rule selected (the 80% [MASK], 10% random and 10% kept
  alike), as BERT's run_pretraining.py evaluation does; the [MASK]-only accuracy is reported beside it.
Every function takes model objects (HF BertModel/AlbertModel or their *ForPreTraining) and returns numbers;
loading checkpoints and writing results is the caller's.
"""

from __future__ import annotations

import copy
import logging
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm
from transformers import AlbertForPreTraining, PreTrainedTokenizerFast, get_linear_schedule_with_warmup

from selfsup.errors import SelfsupError
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import linear_probe
from selfsup.train.optim import parameter_groups

from .bible import GENRES, Verse, bible_verses
from .corpus import Document
from .masking import MaskingCollator
from .pairs import LABEL_KEY, Task, pair_examples

Pooling = Literal["mean", "cls"]
Labeled = tuple[Sequence[str], torch.Tensor]  # (texts, genre indices (N,))


# ---- the genre task -------------------------------------------------------------------------------------------

def _closest_subset(units: list, size: Counter, target: float) -> list:
    """Units whose sizes sum close to `target`: going through them in the given order, again and again, a unit is
    added or removed whenever that brings the sum closer, until none does. At least one unit, never all."""
    chosen: set = set()
    n, changed = 0, True
    while changed:
        changed = False
        for u in units:
            step = -size[u] if u in chosen else size[u]
            if abs(n + step - target) < abs(n - target):
                chosen ^= {u}
                n, changed = n + step, True
    if not chosen:
        chosen = {min(units, key=lambda u: size[u])}
    if len(chosen) == len(units):
        chosen.remove(max(units, key=lambda u: size[u]))
    return [u for u in units if u in chosen]


def _chapter_block(chapters: list[int], size: Counter, target: float, rng: random.Random) -> list[int]:
    """A run of consecutive chapters holding about `target` verses from a seeded start chapter: forward while a
    chapter brings the count closer, then backward from the start (when the book ended first). Never every one."""
    start = rng.randrange(len(chapters))
    block, n = [], 0
    for c in chapters[start:]:
        if block and abs(n + size[c] - target) >= abs(n - target):
            break
        block.append(c)
        n += size[c]
    for c in reversed(chapters[:start]):
        if abs(n + size[c] - target) >= abs(n - target):
            break
        block.insert(0, c)
        n += size[c]
    return block[:-1] if len(block) == len(chapters) else block


def _subsample(verses: list[Verse], n: int, rng: random.Random) -> list[Verse]:
    """About n verses, each genre in its share of `verses` (at least one), in their original order."""
    if n >= len(verses):
        return verses
    by_genre = Counter(v.genre for v in verses)
    keep: set[int] = set()
    for genre, count in by_genre.items():
        index = [i for i, v in enumerate(verses) if v.genre == genre]
        keep.update(rng.sample(index, max(1, round(n * count / len(verses)))))
    return [verses[i] for i in sorted(keep)]


def genre_split(verses: Sequence[Verse] | None = None, test_fraction: float = 0.2, seed: int = 0,
                limit: tuple[int, int] | None = None) -> tuple[list[Verse], list[Verse]]:
    """(train verses, test verses) for genre classification, split by book: no book is on both sides.

    Per genre, about `test_fraction` of its verses go to the test side, so both sides keep the corpus's class
    balance (History 23% ... Revelation 1.3%). A genre of several books holds out whole books: going through them
    in a seeded order, a book is added (or dropped again) whenever that brings the genre's test count closer to
    its target; at least one book, never all (with whole books a genre's share lands between ~0.18 and ~0.3).
    A genre of one book (Acts, Revelation) holds out one run of consecutive chapters from a seeded start, about
    test_fraction of its verses; the chapters before and after are train. `limit=(n_train, n_test)` then keeps a
    seeded sample of about that many verses per side, each genre in its share (at least one verse). Verses
    default to the whole Bible; the same seed gives the same split."""
    verses = list(bible_verses() if verses is None else verses)
    if not 0 < test_fraction < 1:
        raise SelfsupError(f"test fraction must lie in (0, 1), got {test_fraction}; pass e.g. 0.2")
    rng = random.Random(seed)
    held_out: set[tuple[str, int | None]] = set()  # (book, None) for a whole book, (book, chapter) for a chapter
    for genre in dict.fromkeys(v.genre for v in verses):
        members = [v for v in verses if v.genre == genre]
        books = list(dict.fromkeys(v.book for v in members))
        target = test_fraction * len(members)
        if len(books) > 1:
            order = rng.sample(books, len(books))
            held_out.update((b, None) for b in _closest_subset(order, Counter(v.book for v in members), target))
            continue
        chapters = sorted({v.chapter for v in members})
        if len(chapters) < 2:
            raise SelfsupError(f"genre {genre} has one book of one chapter ({books[0]}): it cannot be on both sides "
                               "of a split by book; leave it out")
        block = _chapter_block(chapters, Counter(v.chapter for v in members), target, rng)
        held_out.update((books[0], c) for c in block)
    is_test = [(v.book, None) in held_out or (v.book, v.chapter) in held_out for v in verses]
    train = [v for v, t in zip(verses, is_test) if not t]
    test = [v for v, t in zip(verses, is_test) if t]
    if limit is not None:
        train, test = _subsample(train, limit[0], rng), _subsample(test, limit[1], rng)
    return train, test


def split_summary(train: Sequence[Verse], test: Sequence[Verse]) -> dict[str, dict[str, int]]:
    """Per genre: verses and books on each side ({"train_verses", "test_verses", "train_books", "test_books"})."""
    summary = {}
    for genre in GENRES:
        a, b = [v for v in train if v.genre == genre], [v for v in test if v.genre == genre]
        summary[genre] = {"train_verses": len(a), "test_verses": len(b),
                          "train_books": len({v.book for v in a}), "test_books": len({v.book for v in b})}
    return summary


def texts_labels(verses: Sequence[Verse]) -> Labeled:
    """(texts, genre indices into GENRES (N,) long) of verses."""
    return [v.text for v in verses], torch.tensor([GENRES.index(v.genre) for v in verses])


def verse_documents(verses: Sequence[Verse]) -> list[Document]:
    """One document per chapter of `verses` (e.g. the test side of a split), its verses the segments: the held-out
    text for masked_token_accuracy."""
    chapters: dict[tuple[str, int], list[Verse]] = {}
    for v in verses:
        chapters.setdefault((v.book, v.chapter), []).append(v)
    return [Document(f"{book} {chapter}", tuple(v.text for v in vs), book, vs[0].genre)
            for (book, chapter), vs in chapters.items()]


# ---- frozen features ------------------------------------------------------------------------------------------

def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling,
         special_ids: Sequence[int]) -> torch.Tensor:
    """hidden (B, L, H) -> (B, H): the [CLS] state (position 0) or the mean over the text's tokens, i.e. attended
    tokens other than `special_ids` ([CLS], [SEP]). A text without tokens pools to zeros."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise SelfsupError(f"unknown pooling {pooling!r}: pass mean or cls")
    keep = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(list(special_ids), device=input_ids.device))
    keep = keep.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


def _special_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    return [tokenizer.cls_token_id, tokenizer.sep_token_id]


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def encode_poolings(encoder: nn.Module, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str],
                    poolings: Sequence[Pooling] = ("mean", "cls"), batch_size: int = 128, max_len: int = 128,
                    desc: str = "features") -> dict[str, torch.Tensor]:
    """encode for several poolings from one pass: {pooling: (N, H)}."""
    base = getattr(encoder, "base_model", encoder)  # BertModel / AlbertModel inside a *ForPreTraining
    was_training = base.training
    base.eval()
    tokens = tokenizer(list(texts), truncation=True, max_length=max_len)
    order = sorted(range(len(texts)), key=lambda i: len(tokens["input_ids"][i]))  # little padding per batch
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in tokens]
    parts: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
    for start in tqdm(range(0, len(order), batch_size), desc=desc, leave=False, disable=None):
        rows = [{k: tokens[k][i] for k in keys} for i in order[start:start + batch_size]]
        batch = tokenizer.pad(rows, return_tensors="pt").to(_device(base))
        hidden = base(**batch).last_hidden_state  # (B, L, H)
        for p in poolings:
            parts[p].append(pool(hidden, batch["input_ids"], batch["attention_mask"], p,
                                 _special_ids(tokenizer)).float().cpu())
    base.train(was_training)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return {p: torch.cat(parts[p])[inverse] for p in poolings}


def encode(encoder: nn.Module, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], pooling: Pooling = "mean",
           batch_size: int = 128, max_len: int = 128, desc: str = "features") -> torch.Tensor:
    """Frozen features (N, H) float32 of `texts`, in order: each text as [CLS] text [SEP] (cut to max_len) through
    `encoder` (a BertModel/AlbertModel, or a *ForPreTraining whose base model is used) in eval mode without
    gradients, pooled by `pool`. Texts are batched by length (less padding); the encoder's mode is restored."""
    return encode_poolings(encoder, tokenizer, texts, (pooling,), batch_size, max_len, desc)[pooling]


def probe_features(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor, k: int = 20) -> dict[str, float]:
    """Top-1 of the weighted kNN (selfsup.eval.knn) and the linear probe (selfsup.eval.linear) on features."""
    knn = knn_predict(train_features, train_labels, test_features, k=k)
    linear = torch.as_tensor(linear_probe(train_features.numpy(), train_labels.numpy(), test_features.numpy()))
    return {"knn": float((knn == test_labels).float().mean()), "linear": float((linear == test_labels).float().mean())}


def probe_genre(encoder: nn.Module, tokenizer: PreTrainedTokenizerFast, train: Labeled, test: Labeled,
                pooling: Pooling = "mean", k: int = 20, batch_size: int = 128, max_len: int = 128) -> dict[str, float]:
    """{"knn", "linear"} top-1 on frozen `pooling` features; train and test are (texts, labels (N,)) pairs, e.g.
    texts_labels of genre_split's sides."""
    train_x = encode(encoder, tokenizer, train[0], pooling, batch_size, max_len, desc="train features")
    test_x = encode(encoder, tokenizer, test[0], pooling, batch_size, max_len, desc="test features")
    return probe_features(train_x, torch.as_tensor(train[1]), test_x, torch.as_tensor(test[1]), k)


# ---- masked-token accuracy ------------------------------------------------------------------------------------

def _pair_task(model: nn.Module) -> Task:
    return "sop" if isinstance(model, AlbertForPreTraining) else "nsp"


@torch.no_grad()
def masked_token_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerFast, documents: Sequence[Document],
                          max_len: int = 128, seed: int = 0, batch_size: int = 32, whole_word: bool = False,
                          task: Task | None = None) -> dict[str, float]:
    """How well a BertForPreTraining / AlbertForPreTraining fills in masked tokens of `documents` (held-out text).

    The documents become pair examples as in pretraining (pair_examples: NSP for BERT, SOP for ALBERT unless
    `task` says; seeded) and are masked by MaskingCollator (15%, 80/10/10; `whole_word` as the model was trained)
    with a generator seeded by `seed`, so two models see the same masks. Returns {"mlm": argmax accuracy over every
    selected position, "mlm_masked_only": over those shown as [MASK], task: NSP/SOP accuracy, "masked_tokens": how
    many positions were scored, "examples": how many pairs}."""
    task = task or _pair_task(model)
    examples = sorted(pair_examples(documents, tokenizer, task, max_len=max_len, seed=seed),
                      key=lambda e: len(e["input_ids"]))  # similar lengths per batch
    collate = MaskingCollator(tokenizer, whole_word=whole_word, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    device = _device(model)
    counts: Counter[str] = Counter()
    for start in tqdm(range(0, len(examples), batch_size), desc="masked tokens", leave=False, disable=None):
        batch = collate(examples[start:start + batch_size])
        labels, pair_label = batch.pop("labels"), batch.pop(LABEL_KEY[task])  # (B, L), (B,)
        out = model(**{k: v.to(device) for k, v in batch.items()})
        selected = labels != -100  # (B, L)
        right = out.prediction_logits.argmax(-1).cpu()[selected] == labels[selected]  # (S,)
        shown_mask = batch["input_ids"][selected] == tokenizer.mask_token_id  # (S,)
        pair_logits = out.sop_logits if task == "sop" else out.seq_relationship_logits  # (B, 2)
        counts.update(selected=int(selected.sum()), right=int(right.sum()), masks=int(shown_mask.sum()),
                      right_masks=int(right[shown_mask].sum()),
                      pairs_right=int((pair_logits.argmax(-1).cpu() == pair_label).sum()))
    model.train(was_training)
    return {"mlm": counts["right"] / max(counts["selected"], 1),
            "mlm_masked_only": counts["right_masks"] / max(counts["masks"], 1),
            task: counts["pairs_right"] / len(examples), "masked_tokens": counts["selected"],
            "examples": len(examples)}


# ---- fine-tuning ----------------------------------------------------------------------------------------------

class TextClassifier(nn.Module):
    """encoder (BertModel/AlbertModel) -> pooled (B, H) -> dropout -> linear -> (B, num_classes) logits; forward
    takes the tokenizer's input_ids, token_type_ids and attention_mask (B, L)."""

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: Pooling, special_ids: Sequence[int]):
        super().__init__()
        self.encoder, self.pooling, self.special_ids = encoder, pooling, list(special_ids)
        self.dropout = nn.Dropout(encoder.config.hidden_dropout_prob)  # as BERT's classification head
        self.fc = nn.Linear(encoder.config.hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state  # (B, L, H)
        return self.fc(self.dropout(pool(hidden, input_ids, attention_mask, self.pooling, self.special_ids)))


class TextFinetuneModule(L.LightningModule):
    """Cross-entropy on labeled batches; AdamW (no decay on biases and LayerNorm) with BERT's schedule: linear
    warm-up over `warmup_fraction` of the steps, then linear decay to 0."""

    def __init__(self, model: TextClassifier, lr: float, weight_decay: float, warmup_fraction: float):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.warmup_fraction = model, lr, weight_decay, warmup_fraction

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch.pop("labels")
        loss = F.cross_entropy(self.model(**batch), labels)
        if not torch.isfinite(loss):
            raise SelfsupError(f"the loss became {loss.item()} at step {self.global_step}; pass a lower lr")
        self.log("loss", loss.detach(), prog_bar=True)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(**{k: v for k, v in batch.items() if k != "labels"}).argmax(1)  # (B,)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(parameter_groups(self.model, self.weight_decay), lr=self.lr)
        total = int(self.trainer.estimated_stepping_batches)
        schedule = get_linear_schedule_with_warmup(optimizer, int(self.warmup_fraction * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _labeled_rows(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], labels: torch.Tensor,
                  max_len: int) -> list[dict]:
    tokens = tokenizer(list(texts), truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in tokens]
    return [{**{k: tokens[k][i] for k in keys}, "labels": int(labels[i])} for i in range(len(texts))]


def finetune_genre(encoder: nn.Module, tokenizer: PreTrainedTokenizerFast, train_texts: Sequence[str],
                   train_labels: torch.Tensor, test_texts: Sequence[str], test_labels: torch.Tensor,
                   steps: int = 300, lr: float = 1e-4, batch_size: int = 32, pooling: Pooling = "mean",
                   weight_decay: float = 0.01, warmup_fraction: float = 0.1, max_len: int = 128, seed: int = 0,
                   accelerator: str = "auto", precision: str = "32-true", progress: bool = True) -> float:
    """Top-1 on the test texts after training a copy of `encoder` (a BertModel/AlbertModel, or the base model of
    a *ForPreTraining) with a new linear layer on its pooled features, end to end, for `steps` batches of
    shuffled train texts (Lightning; the caller's encoder is left as it was). Defaults suit a 4-layer
    hidden-256 encoder on a CPU: lr 1e-4 (small BERTs fine-tune at 1e-4..3e-5, Turc et al. 2019), 10% warm-up,
    weight decay 0.01, dropout as the encoder's config."""
    L.seed_everything(seed, verbose=False)
    base = copy.deepcopy(getattr(encoder, "base_model", encoder)).requires_grad_(True)
    train_labels, test_labels = torch.as_tensor(train_labels), torch.as_tensor(test_labels)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    model = TextClassifier(base, num_classes, pooling, _special_ids(tokenizer))
    pad = lambda rows: dict(tokenizer.pad(rows, return_tensors="pt"))  # noqa: E731
    train_rows = _labeled_rows(tokenizer, train_texts, train_labels, max_len)
    if len(train_rows) < 2:
        raise SelfsupError(f"only {len(train_rows)} training text; pass more")
    loader = DataLoader(train_rows, batch_size=min(batch_size, len(train_rows)), shuffle=True, drop_last=True,
                        collate_fn=pad, generator=torch.Generator().manual_seed(seed))
    test_rows = sorted(_labeled_rows(tokenizer, test_texts, test_labels, max_len), key=lambda r: len(r["input_ids"]))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=progress)
    module = TextFinetuneModule(model, lr, weight_decay, warmup_fraction)
    trainer.fit(module, loader)
    predicted = torch.cat(trainer.predict(module, DataLoader(test_rows, batch_size=128, collate_fn=pad))).cpu()
    return float((predicted == torch.tensor([r["labels"] for r in test_rows])).float().mean())


# ---- baseline -------------------------------------------------------------------------------------------------

def tfidf_baseline(train_texts: Sequence[str], train_labels: torch.Tensor | np.ndarray, test_texts: Sequence[str],
                   test_labels: torch.Tensor | np.ndarray, C: float = 10.0) -> float:
    """Top-1 of logistic regression on TF-IDF of word unigrams and bigrams (sublinear tf, lowercased, seen in 2+
    train texts): the no-pretraining reference a text encoder should beat (scikit-learn). The sag solver suits
    unit-norm TF-IDF rows and is several times faster here than lbfgs, to the same optimum."""
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
                          LogisticRegression(C=C, solver="sag", max_iter=1000))
    model.fit(list(train_texts), np.asarray(train_labels))
    return float((model.predict(list(test_texts)) == np.asarray(test_labels)).mean())
