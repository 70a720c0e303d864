"""Text pretraining (BERT, ALBERT): corpora, tokenizers, NSP/SOP pairs, MLM masking and the HF models.

corpus -> tokenizer -> pairs (examples) -> masking (collate_fn) -> models (model(**batch).loss)
"""

from .baseline import tfidf_baseline
from .bible import BOOK_GENRE, BOOKS, GENRES, Verse, bible_documents, bible_verses, load_documents
from .corpus import Document, read_documents, split_segments
from .genres import TEXT_TASKS, LabeledTexts, genre_split, open_labeled_text, texts_labels, verse_documents
from .masking import MaskingCollator, mask_tokens, word_start_table
from .mlm import masked_token_accuracy
from .models import build_albert, build_bert
from .pairs import LABEL_KEY, build_pairs, pair_examples, tokenize_documents
from .tokenizer import (
    SPECIAL_TOKENS,
    tokenizer_from_json,
    tokenizer_to_json,
    train_tokenizer,
)

__all__ = [
    "BOOKS", "BOOK_GENRE", "GENRES", "LABEL_KEY", "SPECIAL_TOKENS", "TEXT_TASKS", "Document", "LabeledTexts",
    "MaskingCollator", "Verse", "bible_documents", "bible_verses", "build_albert", "build_bert", "build_pairs",
    "genre_split", "load_documents", "mask_tokens", "masked_token_accuracy", "open_labeled_text", "pair_examples",
    "read_documents", "split_segments", "texts_labels", "tfidf_baseline", "tokenize_documents",
    "tokenizer_from_json", "tokenizer_to_json", "train_tokenizer", "verse_documents", "word_start_table",
]
