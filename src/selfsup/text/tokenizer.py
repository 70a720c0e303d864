"""Tokenizers trained on the user's own corpus with HF `tokenizers`, wrapped as a transformers fast tokenizer:
WordPiece for BERT, a SentencePiece-style unigram model for ALBERT. A tokenizer travels as JSON inside the
checkpoint's data_meta, so a run never downloads one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from tokenizers import Tokenizer, normalizers, processors
from tokenizers.implementations import BertWordPieceTokenizer, SentencePieceUnigramTokenizer
from transformers import PreTrainedTokenizerFast

from selfsup.errors import SelfsupError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # ids 0-4 in this order: [PAD] = 0 as BertConfig's pad_token_id
TokenizerKind = Literal["wordpiece", "unigram"]


def train_tokenizer(texts: Iterable[str], kind: TokenizerKind = "wordpiece", vocab_size: int = 8000,
                    lowercase: bool = True) -> PreTrainedTokenizerFast:
    """Train on `texts` (segments or documents, any iterable of str) and return a tokenizer whose
    `tokenizer(a, b)` gives [CLS] a [SEP] b [SEP] with token_type_ids 0 ... 0 1 ... 1.
    WordPiece: BERT's normaliser and pre-tokeniser (punctuation split off, "##" continuations), min frequency 2.
    Unigram: SentencePiece's (NFKC, "▁" marks a word start, no punctuation split). The vocabulary may come out
    smaller than `vocab_size` on a small corpus."""
    if kind == "wordpiece":
        backend = BertWordPieceTokenizer(lowercase=lowercase)
        backend.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif kind == "unigram":
        backend = SentencePieceUnigramTokenizer()
        if lowercase:
            backend.normalizer = normalizers.Sequence([backend.normalizer, normalizers.Lowercase()])
        backend.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK,
                                    show_progress=False)
    else:
        raise SelfsupError(f"unknown tokenizer kind {kind!r}: pass wordpiece (BERT) or unigram (ALBERT)")
    tokenizer = backend._tokenizer  # the tokenizers.Tokenizer inside the implementation wrapper
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise SelfsupError("the tokenizer learned no tokens: the corpus is empty")
    cls, sep = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=[(CLS, cls), (SEP, sep)])
    return _wrap(tokenizer)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, cls_token=CLS,
                                   sep_token=SEP, mask_token=MASK,
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def tokenizer_to_json(tokenizer: PreTrainedTokenizerFast) -> str:
    """The whole tokenizer as one JSON string (what a checkpoint stores, so it rebuilds without its run folder)."""
    return tokenizer.backend_tokenizer.to_str()


def tokenizer_from_json(text: str) -> PreTrainedTokenizerFast:
    """Undo tokenizer_to_json."""
    return _wrap(Tokenizer.from_str(text))
