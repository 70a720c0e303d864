"""Sentence-pair examples for BERT's next-sentence prediction (NSP) and ALBERT's sentence-order prediction (SOP).

The algorithm of the papers' create_pretraining_data.py (BERT and ALBERT), per document:
1. target length T = max_len - 3 (room for [CLS] A [SEP] B [SEP]); with probability short_seq_prob a random
   T in [2, max_len - 3] instead, so the model also sees short inputs;
2. a chunk = consecutive segments from the current position until they hold >= T tokens (at least two segments);
3. A = the chunk's first k segments (k uniform in 1 .. len(chunk) - 1), B = the rest: B follows A in the text;
4. NSP: with probability 1/2 B is replaced by consecutive segments of a random other document (from a random
   segment, up to T - |A| tokens), label 1 = NotNext, and the unused true B is put back for the next chunk;
   otherwise label 0 = IsNext. SOP: with probability 1/2 A and B are swapped, label 1; otherwise label 0;
5. truncate the pair longest-first to max_len - 3 tokens, each token cut from the front or back at random.
Deviation: the papers force "random next" (label 1) when a chunk holds one segment (a document's lone last
segment); here such a segment is skipped, so the label is a fair coin on every example.
Labels follow HF: BertForPreTraining's next_sentence_label (0 = B is the continuation), AlbertForPreTraining's
sentence_order_label (0 = original order)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from transformers import PreTrainedTokenizerFast

from selfsup.errors import SelfsupError

from .corpus import Document

Task = Literal["nsp", "sop"]
LABEL_KEY = {"nsp": "next_sentence_label", "sop": "sentence_order_label"}
TokenDoc = Sequence[Sequence[int]]  # a document as the token ids of each of its segments


def tokenize_documents(documents: Sequence[Document], tokenizer: PreTrainedTokenizerFast) -> list[list[list[int]]]:
    """Each segment's token ids, without special tokens; segments with no tokens dropped."""
    docs = []
    for d in documents:
        ids = tokenizer(list(d.segments), add_special_tokens=False)["input_ids"]
        docs.append([s for s in ids if s])
    return docs


def _windows(doc: TokenDoc, size: int) -> TokenDoc:
    """A segment longer than a whole pair (a 200,000-character line) cut into consecutive windows of `size` tokens,
    half a pair, so that its text becomes examples instead of being dropped or cut away."""
    if all(len(segment) <= 2 * size for segment in doc):
        return doc
    return [segment[i:i + size] for segment in doc
            for i in range(0, len(segment), size if len(segment) > 2 * size else len(segment))]


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Cut the longer of a, b one token at a time (front or back at random) until |a| + |b| <= max_tokens."""
    la, lb = len(a), len(b)
    while la + lb > max_tokens:  # only counts here; the cuts happen below, in one slice each
        if la > lb:
            la -= 1
        else:
            lb -= 1

    def cut(x: list[int], keep: int) -> list[int]:
        front = sum(rng.random() < 0.5 for _ in range(len(x) - keep))  # tokens cut from the front
        return x[front:front + keep]

    return cut(a, la), cut(b, lb)


def pack(a: list[int], b: list[int], cls_id: int, sep_id: int) -> dict[str, list[int]]:
    """[CLS] a [SEP] b [SEP] with token_type_ids 0 for [CLS] a [SEP] and 1 for b [SEP]."""
    return {"input_ids": [cls_id, *a, sep_id, *b, sep_id], "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1)}


def _random_segments(docs: Sequence[TokenDoc], d: int, target: int, rng: random.Random) -> list[int]:
    """Consecutive segments of a document other than d, from a random one, until >= target tokens (one at least)."""
    other = rng.randrange(len(docs) - 1)
    other += other >= d  # uniform over the documents other than d
    doc = docs[other]
    out: list[int] = []
    for segment in doc[rng.randrange(len(doc)):]:
        out += segment
        if len(out) >= target:
            break
    return out


def _document_pairs(docs: Sequence[TokenDoc], d: int, task: Task, max_len: int, short_seq_prob: float,
                    cls_id: int, sep_id: int, rng: random.Random) -> list[dict]:
    doc, max_tokens, examples, i = docs[d], max_len - 3, [], 0
    while i < len(doc):
        target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
        j, length = i, 0
        while j < len(doc) and (j - i < 2 or length < target):
            length += len(doc[j])
            j += 1
        if j - i < 2:
            break  # a lone last segment: no B follows it
        k = rng.randint(i + 1, j - 1)
        a = [t for s in doc[i:k] for t in s]
        b = [t for s in doc[k:j] for t in s]
        label = int(rng.random() < 0.5)
        if label and task == "nsp":
            b = _random_segments(docs, d, target - len(a), rng)
            j = k  # put the true B back
        elif label:
            a, b = b, a
        a, b = truncate_pair(a, b, max_tokens, rng)
        examples.append({**pack(a, b, cls_id, sep_id), LABEL_KEY[task]: label})
        i = j
    return examples


def build_pairs(docs: Sequence[TokenDoc], task: Task, cls_id: int, sep_id: int, max_len: int = 128,
                short_seq_prob: float = 0.1, seed: int = 0) -> list[dict]:
    """Pair examples from tokenised documents, in document order (shuffle in the DataLoader). Each is
    {"input_ids": list[int] (<= max_len), "token_type_ids": list[int], LABEL_KEY[task]: 0 or 1}.
    The same seed gives the same examples; use a new seed per epoch for fresh pairs."""
    if task not in LABEL_KEY:
        raise SelfsupError(f"unknown sentence-pair task {task!r}: pass nsp (BERT) or sop (ALBERT)")
    if max_len < 5:
        raise SelfsupError(f"max_len {max_len} leaves no room for two segments: pass 5 or more")
    docs = [_windows(doc, max(1, (max_len - 3) // 2)) for doc in docs if doc]
    if task == "nsp" and len(docs) < 2:
        raise SelfsupError("next-sentence prediction needs at least two documents (its negatives come from another)")
    rng = random.Random(seed)
    examples = [e for d in range(len(docs)) for e in _document_pairs(docs, d, task, max_len, short_seq_prob,
                                                                      cls_id, sep_id, rng)]
    if not examples:
        raise SelfsupError("no document has two segments to pair: separate documents by blank lines and put "
                           "sentences on their own lines (or end them with . ! ?)")
    return examples


def pair_examples(documents: Sequence[Document], tokenizer: PreTrainedTokenizerFast, task: Task,
                  max_len: int = 128, short_seq_prob: float = 0.1, seed: int = 0) -> list[dict]:
    """tokenize_documents then build_pairs with the tokenizer's [CLS] and [SEP]."""
    return build_pairs(tokenize_documents(documents, tokenizer), task, tokenizer.cls_token_id,
                       tokenizer.sep_token_id, max_len, short_seq_prob, seed)
