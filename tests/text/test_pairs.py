import random

import pytest

from selfsup.errors import SelfsupError
from selfsup.text import LABEL_KEY, build_pairs, pair_examples
from selfsup.text.pairs import truncate_pair

CLS, SEP = 2, 3


def synthetic_documents(n_docs: int = 300, seed: int = 0) -> list[list[list[int]]]:
    """Token id 100_000 + 1000 * document + 10 * segment + k: every token says where it came from."""
    rng = random.Random(seed)
    return [[[100_000 + 1000 * d + 10 * s + k for k in range(rng.randint(2, 9))] for s in range(rng.randint(3, 12))]
            for d in range(n_docs)]


def where(token: int) -> tuple[int, int]:
    return (token - 100_000) // 1000, (token - 100_000) % 1000 // 10  # (document, segment)


def halves(example: dict) -> tuple[list[int], list[int]]:
    ids = example["input_ids"]
    sep = ids.index(SEP)
    return ids[1:sep], ids[sep + 1:-1]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_packing_cls_a_sep_b_sep_with_segment_ids(task):
    examples = build_pairs(synthetic_documents(), task, CLS, SEP, max_len=24, seed=1)
    for e in examples:
        ids, types = e["input_ids"], e["token_type_ids"]
        a, b = halves(e)
        assert ids == [CLS, *a, SEP, *b, SEP] and a and b and CLS not in a + b and SEP not in a + b
        assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert len(ids) <= 24 and e[LABEL_KEY[task]] in (0, 1)
    lengths = [len(e["input_ids"]) for e in examples]
    assert sum(lengths) / len(lengths) > 0.75 * 24  # segments are packed up to the length, not one per side


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_half_of_the_pairs_are_negatives(task):
    examples = build_pairs(synthetic_documents(2000), task, CLS, SEP, max_len=20, seed=2)
    rate = sum(e[LABEL_KEY[task]] for e in examples) / len(examples)
    assert len(examples) > 4000 and abs(rate - 0.5) < 0.025  # > 3 standard deviations (0.008)


def test_nsp_positive_is_the_next_segments_negative_another_document():
    # No truncation (max_len large), no short targets: B starts at the segment after A's last.
    for e in build_pairs(synthetic_documents(), "nsp", CLS, SEP, max_len=512, short_seq_prob=0.0, seed=3):
        a, b = halves(e)
        (da, _), (_, sa_last), (db, sb_first) = where(a[0]), where(a[-1]), where(b[0])
        assert {where(t)[0] for t in a} == {da} and {where(t)[0] for t in b} == {db}
        if e["next_sentence_label"] == 0:
            assert db == da and sb_first == sa_last + 1
        else:
            assert db != da


def test_sop_pairs_are_consecutive_segments_of_one_document_swapped_for_negatives():
    for e in build_pairs(synthetic_documents(), "sop", CLS, SEP, max_len=512, short_seq_prob=0.0, seed=4):
        first, second = halves(e)
        docs = {where(t)[0] for t in first + second}
        assert len(docs) == 1
        if e["sentence_order_label"] == 0:
            assert where(second[0])[1] == where(first[-1])[1] + 1  # in order: A then its continuation B
        else:
            assert where(first[0])[1] == where(second[-1])[1] + 1  # swapped: B then A


def test_truncated_pairs_keep_segment_order():
    for e in build_pairs(synthetic_documents(), "sop", CLS, SEP, max_len=12, seed=5):
        first, second = halves(e)
        assert first == sorted(first) and second == sorted(second)  # contiguous spans, cut only at their ends
        assert (first[-1] < second[0]) == (e["sentence_order_label"] == 0)


def test_truncate_longest_first_from_either_end():
    rng = random.Random(0)
    a, b = list(range(10)), list(range(100, 103))
    fronts = set()
    for _ in range(300):
        ta, tb = truncate_pair(a, b, 8, rng)
        assert len(ta) == 5 and tb == b  # the longer one is cut down to 5 first
        assert ta == a[ta[0]:ta[0] + 5]  # a contiguous slice
        fronts.add(ta[0])
    assert fronts == {0, 1, 2, 3, 4, 5}  # 0 to 5 tokens cut from the front
    ta, tb = truncate_pair(list(range(6)), list(range(6)), 8, rng)
    assert (len(ta), len(tb)) == (4, 4)


def test_seeded_and_all_segments_used():
    docs = synthetic_documents()
    assert build_pairs(docs, "nsp", CLS, SEP, seed=7) == build_pairs(docs, "nsp", CLS, SEP, seed=7)
    assert build_pairs(docs, "nsp", CLS, SEP, seed=7) != build_pairs(docs, "nsp", CLS, SEP, seed=8)
    examples = build_pairs(docs, "sop", CLS, SEP, max_len=512, short_seq_prob=0.0)
    used = {where(t) for e in examples for t in e["input_ids"] if t > SEP}
    total = sum(len(d) for d in docs)
    assert len(used) >= total - len(docs)  # at most a lone last segment per document is left out


def test_errors():
    with pytest.raises(SelfsupError, match="at least two documents"):
        build_pairs(synthetic_documents(1), "nsp", CLS, SEP)
    with pytest.raises(SelfsupError, match="no document has two segments"):
        build_pairs([[[5, 6]], [[7]]], "sop", CLS, SEP)
    with pytest.raises(SelfsupError, match="unknown sentence-pair task"):
        build_pairs(synthetic_documents(2), "mlm", CLS, SEP)


@pytest.mark.parametrize("kind, task", [("wordpiece", "nsp"), ("unigram", "sop")])
def test_pair_examples_from_text(documents, tokenizers, kind, task):
    tok = tokenizers[kind]
    examples = pair_examples(documents, tok, task, max_len=64)
    tokens = tok.convert_ids_to_tokens(examples[0]["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    assert all(len(e["input_ids"]) <= 64 for e in examples) and len(examples) > 300
