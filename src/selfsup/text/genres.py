"""The labelled text task: a Bible verse's genre (8 classes), split by book so that a probe cannot succeed by
recognising a verse's neighbours or a book's names; the two single-book genres (Acts, Revelation) hold out a block
of chapters. `selfsup train bert --data bible` pretrains on the train side of the seed-0 split only.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

from .bible import GENRES, Verse, bible_verses
from .corpus import Document

TEXT_TASKS = ("bible-genres",)



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


def texts_labels(verses: Sequence[Verse]) -> tuple[list[str], torch.Tensor]:
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


class LabeledTexts(Dataset):
    """(text, genre index) items of verses; `classes` are the genre names, `name` the task."""

    def __init__(self, verses: Sequence[Verse], name: str):
        self.texts, self.labels = texts_labels(verses)
        self.classes, self.name = list(GENRES), name

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], int(self.labels[i])


def open_labeled_text(data: str, limit: tuple[int, int] | None = None) -> tuple[LabeledTexts, LabeledTexts]:
    """(train, test) of a labelled text task: `bible-genres` is the seed-0 genre split, the one `selfsup train bert`
    held out; limit=(n_train, n_test) keeps a seeded sample of about that many verses per side."""
    if data not in TEXT_TASKS:
        raise SelfsupError(f"text encoders are evaluated on bible-genres (a verse's genre, split by book), not {data!r}")
    train, test = genre_split(seed=0, limit=limit)
    return LabeledTexts(train, data), LabeledTexts(test, data)
