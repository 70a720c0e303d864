"""BERT and ALBERT pretraining networks from HF transformers, built from a config with random weights (no download).

Defaults are sized to train on a CPU (4 layers, hidden 256); BERT-base is hidden 768, layers 12, heads 12,
intermediate 3072, max_len 512 (ALBERT-base the same with embedding_size 128).
Both take model(input_ids, token_type_ids, attention_mask, labels, <label key>) as MaskingCollator yields it and
return .loss = masked-LM cross-entropy + NSP (BERT) or SOP (ALBERT) cross-entropy, .prediction_logits (B, L, V)
and .seq_relationship_logits / .sop_logits (B, 2).
"""

from __future__ import annotations

from transformers import AlbertConfig, AlbertForPreTraining, BertConfig, BertForPreTraining

from selfsup.errors import SelfsupError


def _check(hidden: int, heads: int) -> None:
    if hidden % heads:
        raise SelfsupError(f"hidden size {hidden} is not a multiple of the {heads} attention heads")


def build_bert(vocab_size: int, hidden: int = 256, layers: int = 4, heads: int = 4, intermediate: int = 1024,
               max_len: int = 128, dropout: float = 0.1, pad_token_id: int = 0) -> BertForPreTraining:
    """BERT (Devlin et al. 2019) with its MLM head (tied to the word embeddings) and NSP head; GELU, dropout 0.1
    as the paper. vocab_size = len(tokenizer); max_len = the longest input (position embeddings)."""
    _check(hidden, heads)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=max_len,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id)
    return BertForPreTraining(config)


def build_albert(vocab_size: int, embedding_size: int = 128, hidden: int = 256, layers: int = 4, heads: int = 4,
                 intermediate: int = 1024, max_len: int = 128, dropout: float = 0.0,
                 pad_token_id: int = 0) -> AlbertForPreTraining:
    """ALBERT (Lan et al. 2020): factorised embedding (V x E word embeddings, then an E x H projection), one layer
    whose parameters all `layers` passes share (one group of one layer), MLM head back through E (tied to the
    word embeddings) and SOP head. No dropout, as ALBERT v2 (the paper found removing it helps)."""
    _check(hidden, heads)
    config = AlbertConfig(vocab_size=vocab_size, embedding_size=embedding_size, hidden_size=hidden,
                          num_hidden_layers=layers, num_hidden_groups=1, inner_group_num=1, num_attention_heads=heads,
                          intermediate_size=intermediate, max_position_embeddings=max_len, hidden_dropout_prob=dropout,
                          attention_probs_dropout_prob=dropout, pad_token_id=pad_token_id)
    return AlbertForPreTraining(config)
