"""Text pretraining (BERT, ALBERT): corpora, tokenizers, NSP/SOP pairs, MLM masking and the HF models.

corpus -> tokenizer -> pairs (examples) -> masking (collate_fn) -> models (model(**batch).loss)
"""

from .bible import BOOK_GENRE, BOOKS, GENRES, Verse, bible_documents, bible_verses
from .corpus import Document, load_documents, read_documents, split_segments
from .masking import MaskingCollator, mask_tokens, word_start_table
from .models import build_albert, build_bert
from .pairs import LABEL_KEY, build_pairs, pair_examples, tokenize_documents
from .tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    save_tokenizer,
    tokenizer_from_json,
    tokenizer_to_json,
    train_tokenizer,
)

__all__ = [
    "BOOKS", "BOOK_GENRE", "GENRES", "LABEL_KEY", "SPECIAL_TOKENS", "Document", "MaskingCollator", "Verse",
    "bible_documents", "bible_verses", "build_albert", "build_bert", "build_pairs", "load_documents",
    "load_tokenizer", "mask_tokens", "pair_examples", "read_documents", "save_tokenizer", "split_segments",
    "tokenize_documents", "tokenizer_from_json", "tokenizer_to_json", "train_tokenizer", "word_start_table",
]
