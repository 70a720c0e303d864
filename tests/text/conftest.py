import pytest

from selfsup.text import bible_documents, train_tokenizer


@pytest.fixture(scope="session")
def documents():
    """The first 30 chapters of Genesis: 806 verses, about 25k tokens."""
    return bible_documents()[:30]


@pytest.fixture(scope="session")
def tokenizers(documents):
    """A small WordPiece and a small unigram tokenizer trained on those chapters, by kind."""
    texts = [s for d in documents for s in d.segments]
    return {kind: train_tokenizer(texts, kind, vocab_size=400) for kind in ("wordpiece", "unigram")}
