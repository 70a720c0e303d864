"""BERT's masked-LM corruption, as a DataLoader collate function: pad a list of pair examples and mask them anew
every batch (dynamic masking).

Rule (BERT sec. 3.1): each ordinary token is selected with probability 15% (special and padding tokens never);
a selected token becomes [MASK] 80% of the time, a random token 10%, and stays unchanged 10%; its label is the
original id, every other label is -100. The random token is drawn from the ordinary tokens (BERT's code draws from
the whole vocabulary, so it could insert a [SEP] or [PAD]; 5 ids of thousands). Whole-word masking selects words with probability 15% and then
every piece of a selected word, each piece still 80/10/10 (as BERT's and ALBERT's create_pretraining_data.py).
A word starts at a WordPiece token without "##", or at a unigram piece that starts with "▁" or is punctuation
(ALBERT's _is_start_piece).

Not transformers' DataCollatorForLanguageModeling: its token-level rule is the same, but its whole-word option
replaces every selected token by [MASK] (no 10% random / 10% kept) and finds words from character offsets, which
joins punctuation to the word before it ("said," is one word); one short function here serves both modes.
"""

from __future__ import annotations

import string

import torch
from tokenizers.models import Unigram, WordPiece
from transformers import PreTrainedTokenizerFast


def word_start_table(tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """(V,) bool: whether each token id can start a word. All True for other tokenizer models (token masking)."""
    model = tokenizer.backend_tokenizer.model
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if isinstance(model, WordPiece):
        starts = [not t.startswith(model.continuing_subword_prefix) for t in vocab]
    elif isinstance(model, Unigram):
        starts = [t.startswith("▁") or all(c in string.punctuation for c in t) for t in vocab]
    else:
        starts = [True] * len(vocab)
    return torch.tensor(starts, dtype=torch.bool)


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, word_start: torch.Tensor, mask_id: int,
                replacement_ids: torch.Tensor, probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids (B, L) long; maskable (B, L) bool; word_start (B, L) bool, True at the first maskable token of
    every word (= maskable for token-level masking); replacement_ids (R,) the ids a random replacement draws from.
    Returns (corrupted input_ids (B, L), labels (B, L): the original id where selected, else -100)."""
    B, L = input_ids.shape
    position = torch.arange(L, device=input_ids.device).expand(B, L)
    word_of = torch.where(word_start, position, 0).cummax(dim=1).values  # (B, L) position of each token's word start
    rand = torch.rand(2, B, L, generator=generator).to(input_ids.device)
    chosen = word_start & (rand[0] < probability)  # (B, L) selected words, at their first piece
    selected = maskable & chosen.gather(1, word_of)  # (B, L) every piece of a selected word
    labels = torch.where(selected, input_ids, -100)
    random_ids = replacement_ids[torch.randint(len(replacement_ids), (B, L), generator=generator)].to(input_ids.device)
    corrupted = torch.where(selected & (rand[1] < 0.8), mask_id, input_ids)  # 80% [MASK]
    corrupted = torch.where(selected & (rand[1] >= 0.8) & (rand[1] < 0.9), random_ids, corrupted)  # 10% random
    return corrupted, labels  # the last 10% stay as they were


class MaskingCollator:
    """collate_fn for pair examples (pairs.py): list of {"input_ids", "token_type_ids", label key} with lists of
    different lengths -> {"input_ids" (B, L) corrupted, "token_type_ids" (B, L), "attention_mask" (B, L),
    "labels" (B, L), label key (B,)}, L the longest example (rounded up to pad_to_multiple_of). Feeds
    BertForPreTraining / AlbertForPreTraining as model(**batch). `generator` seeds the masks (tests); None uses
    torch's global RNG, which DataLoader seeds differently in each worker."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, probability: float = 0.15, whole_word: bool = False,
                 pad_to_multiple_of: int | None = None, generator: torch.Generator | None = None):
        self.tokenizer, self.probability, self.whole_word = tokenizer, probability, whole_word
        self.pad_to_multiple_of, self.generator = pad_to_multiple_of, generator
        self.special = torch.zeros(len(tokenizer), dtype=torch.bool)  # (V,) [PAD] [UNK] [CLS] [SEP] [MASK]
        self.special[tokenizer.all_special_ids] = True
        self.starts = word_start_table(tokenizer)  # (V,)
        self.replacement_ids = (~self.special).nonzero().squeeze(1)  # (R,) ordinary tokens

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenizer.pad(examples, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of))
        ids = batch["input_ids"]  # (B, L), padded with [PAD]
        maskable = ~self.special[ids]  # (B, L)
        word_start = maskable
        if self.whole_word:
            after_special = torch.cat([torch.ones_like(maskable[:, :1]), ~maskable[:, :-1]], dim=1)
            word_start = maskable & (self.starts[ids] | after_special)
        batch["input_ids"], batch["labels"] = mask_tokens(ids, maskable, word_start, self.tokenizer.mask_token_id,
                                                          self.replacement_ids, self.probability, self.generator)
        return batch
