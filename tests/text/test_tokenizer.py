import pytest

from selfsup.errors import SelfsupError
from selfsup.text import SPECIAL_TOKENS, tokenizer_from_json, tokenizer_to_json, train_tokenizer


@pytest.mark.parametrize("kind, marker", [("wordpiece", "##"), ("unigram", "▁")])
def test_trained_tokenizer_has_bert_special_tokens_and_pairs(tokenizers, kind, marker):
    tok = tokenizers[kind]
    assert tok.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS  # [PAD] = 0
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == tuple(SPECIAL_TOKENS)
    assert 100 < len(tok) <= 400
    assert any(marker in t for t in tok.get_vocab())
    enc = tok("God said, let there be light", "and there was light.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    first_sep = tokens.index("[SEP]")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[SEP]") == 2
    assert enc["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    assert "[UNK]" not in tokens  # lowercased text of the corpus is all known
    assert tok.decode(tok("God said")["input_ids"], skip_special_tokens=True) == "god said"


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_checkpoint_round_trip(tokenizers, kind):
    loaded = tokenizer_from_json(tokenizer_to_json(tokenizers[kind]))  # as data_meta carries it in a checkpoint
    text = "In the beginning God created the heavens and the earth."
    assert loaded(text, "Amen.") == tokenizers[kind](text, "Amen.")
    assert loaded.all_special_ids == tokenizers[kind].all_special_ids and len(loaded) == len(tokenizers[kind])


def test_errors():
    with pytest.raises(SelfsupError, match="unknown tokenizer kind"):
        train_tokenizer(["a b"], "bpe")
    with pytest.raises(SelfsupError, match="corpus is empty"):
        train_tokenizer([], "wordpiece")
