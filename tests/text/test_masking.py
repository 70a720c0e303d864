import string

import pytest
import torch

from selfsup.text import MaskingCollator, pair_examples, word_start_table


@pytest.fixture(scope="module")
def examples(documents, tokenizers):
    """About 24k tokens of NSP pairs per tokenizer, max_len 64 (so the batch has padding)."""
    return {kind: pair_examples(documents, tok, "nsp", max_len=64, seed=0) for kind, tok in tokenizers.items()}


def collate(tokenizer, examples, whole_word=False, seed=0):
    original = tokenizer.pad(examples, return_tensors="pt")["input_ids"]  # (B, L) before masking
    batch = MaskingCollator(tokenizer, whole_word=whole_word, generator=torch.Generator().manual_seed(seed))(examples)
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    return original, batch, special


def continues_word(tokenizer, kind, ids: torch.Tensor) -> torch.Tensor:
    """(B, L) True where a token continues the word before it, from the token strings: "##x" in WordPiece,
    a piece without the leading "▁" that is not punctuation in the unigram model."""
    def continues(t: str) -> bool:
        if t in tokenizer.all_special_tokens:
            return False
        if kind == "wordpiece":
            return t.startswith("##")
        return not t.startswith("▁") and not all(c in string.punctuation for c in t)

    return torch.tensor([[continues(t) for t in tokenizer.convert_ids_to_tokens(row)] for row in ids.tolist()])


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_token_masking_rates_and_rules(tokenizers, examples, kind):
    tok = tokenizers[kind]
    original, batch, special = collate(tok, examples[kind])
    ids, labels = batch["input_ids"], batch["labels"]  # (B, L)
    selected = labels != -100
    n = (~special).sum().item()
    assert n > 20_000 and (original == tok.pad_token_id).any()
    assert abs(selected.sum().item() / n - 0.15) < 0.01
    assert not (selected & special).any()  # [CLS] [SEP] [PAD] never selected
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(ids[~selected], original[~selected])  # everything else untouched, padding included
    as_mask = ids[selected] == tok.mask_token_id
    kept = ids[selected] == original[selected]
    randomised = ~as_mask & ~kept
    assert abs(as_mask.float().mean().item() - 0.8) < 0.02
    assert abs(kept.float().mean().item() - 0.1) < 0.02
    assert abs(randomised.float().mean().item() - 0.1) < 0.02
    assert not torch.isin(ids[selected][randomised], torch.tensor(tok.all_special_ids)).any()
    partial = continues_word(tok, kind, original) & (selected != selected.roll(1, dims=1))
    assert partial.any()  # token masking does split words (so the whole-word test below can fail)


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_whole_word_masking_masks_every_piece_together(tokenizers, examples, kind):
    tok = tokenizers[kind]
    original, batch, special = collate(tok, examples[kind], whole_word=True, seed=1)
    selected = batch["labels"] != -100
    continuing = continues_word(tok, kind, original) & ~special.roll(1, dims=1)  # (B, L) a piece after a piece
    assert continuing.sum() > 2000  # plenty of multi-piece words in the data
    assert torch.equal(selected[continuing], selected.roll(1, dims=1)[continuing])  # same fate as the piece before
    assert (selected & continuing).sum() > 200
    assert not (selected & special).any()
    assert abs(selected.sum().item() / (~special).sum().item() - 0.15) < 0.02
    assert abs((batch["input_ids"][selected] == tok.mask_token_id).float().mean().item() - 0.8) < 0.03


def test_batch_layout_and_seeding(tokenizers, examples):
    tok, some = tokenizers["wordpiece"], examples["wordpiece"][:8]
    original, batch, _ = collate(tok, some)
    B, L = original.shape
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in some]
    assert torch.equal(batch["attention_mask"].bool(), original != tok.pad_token_id)
    assert batch["token_type_ids"].shape == (B, L) == batch["labels"].shape
    again = collate(tok, some)[1]
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    padded = MaskingCollator(tok, pad_to_multiple_of=16)(some)
    assert padded["input_ids"].shape[1] % 16 == 0


def test_word_start_table(tokenizers):
    for kind, tok in tokenizers.items():
        starts = word_start_table(tok)
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        assert starts.shape == (len(tok),)
        if kind == "wordpiece":
            assert all(starts[i] == (not t.startswith("##")) for i, t in enumerate(vocab))
        else:
            assert starts[tok.convert_tokens_to_ids("▁the")] and starts[tok.convert_tokens_to_ids(",")]
            assert not any(starts[i] for i, t in enumerate(vocab) if t.isalpha())  # a piece inside a word
