import pytest
import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.text import MaskingCollator, build_albert, build_bert, pair_examples


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied weight counts once


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out  # weight + bias


def layer_norm(d: int) -> int:
    return 2 * d  # gain + bias


def transformer_layer(H: int, I: int) -> int:
    attention = 3 * linear(H, H) + linear(H, H) + layer_norm(H)  # Q, K, V; output projection; post-attention LN
    feed_forward = linear(H, I) + linear(I, H) + layer_norm(H)  # H -> I -> H; post-FFN LN
    return attention + feed_forward


def bert_encoder(V: int, H: int, L: int, I: int, P: int, T: int = 2) -> int:
    embeddings = V * H + P * H + T * H + layer_norm(H)  # word, position, token type (segment); LN
    pooler = linear(H, H)  # [CLS] -> tanh(W h + b), what NSP reads
    return embeddings + L * transformer_layer(H, I) + pooler


def bert_pretraining(V: int, H: int, L: int, I: int, P: int) -> int:
    mlm_head = linear(H, H) + layer_norm(H) + V  # transform (dense + GELU + LN); decoder = word embeddings^T + bias V
    nsp_head = linear(H, 2)
    return bert_encoder(V, H, L, I, P) + mlm_head + nsp_head


def albert_encoder(V: int, E: int, H: int, L: int, I: int, P: int, T: int = 2) -> int:
    embeddings = V * E + P * E + T * E + layer_norm(E)  # all in the small size E: V x E instead of V x H
    projection = linear(E, H)  # E x H (+ bias): the factorisation's second matrix
    shared_layer = transformer_layer(H, I)  # one layer's parameters, whatever L is
    pooler = linear(H, H)
    return embeddings + projection + shared_layer + pooler


def albert_pretraining(V: int, E: int, H: int, L: int, I: int, P: int) -> int:
    mlm_head = linear(H, E) + layer_norm(E) + V  # H -> E, LN; decoder = word embeddings^T (E x V) + bias V
    sop_head = linear(H, 2)
    return albert_encoder(V, E, H, L, I, P) + mlm_head + sop_head


def test_formulas_match_published_base_sizes():
    assert bert_encoder(V=30522, H=768, L=12, I=3072, P=512) == 109_482_240  # HF bert-base-uncased BertModel
    assert albert_encoder(V=30000, E=128, H=768, L=12, I=3072, P=512) == 11_683_584  # HF albert-base-v2 AlbertModel


def test_bert_parameter_count():
    assert n_params(build_bert(100, hidden=32, layers=2, heads=2, intermediate=64, max_len=40)) == \
        bert_pretraining(V=100, H=32, L=2, I=64, P=40)
    with torch.device("meta"):  # BERT-base without allocating it
        base = build_bert(30522, hidden=768, layers=12, heads=12, intermediate=3072, max_len=512)
    assert n_params(base) == bert_pretraining(V=30522, H=768, L=12, I=3072, P=512) == 110_106_428


@pytest.mark.parametrize("layers", [1, 3, 6])
def test_albert_parameter_count_is_independent_of_depth(layers):
    model = build_albert(100, embedding_size=16, hidden=32, layers=layers, heads=2, intermediate=64, max_len=40)
    assert n_params(model) == albert_pretraining(V=100, E=16, H=32, L=layers, I=64, P=40)
    assert model.albert.embeddings.word_embeddings.weight.shape == (100, 16)  # V x E
    assert model.albert.encoder.embedding_hidden_mapping_in.weight.shape == (32, 16)  # E -> H
    assert model.predictions.decoder.weight is model.albert.embeddings.word_embeddings.weight  # tied


@pytest.mark.parametrize("kind, task, build", [("wordpiece", "nsp", build_bert), ("unigram", "sop", build_albert)])
def test_one_pretraining_step_returns_mlm_plus_pair_loss(documents, tokenizers, kind, task, build):
    tok = tokenizers[kind]
    examples = pair_examples(documents[:2], tok, task, max_len=48)[:8]
    batch = MaskingCollator(tok, generator=torch.Generator().manual_seed(0))(examples)
    torch.manual_seed(0)
    model = build(len(tok), hidden=32, layers=2, heads=2, intermediate=64, max_len=48)
    out = model(**batch)
    pair_logits = out.seq_relationship_logits if task == "nsp" else out.sop_logits  # (B, 2)
    label = batch["next_sentence_label" if task == "nsp" else "sentence_order_label"]
    assert out.prediction_logits.shape == (*batch["input_ids"].shape, len(tok)) and pair_logits.shape == (8, 2)
    mlm = F.cross_entropy(out.prediction_logits.flatten(0, 1), batch["labels"].flatten())  # ignores -100
    assert torch.isfinite(out.loss) and torch.allclose(out.loss, mlm + F.cross_entropy(pair_logits, label))
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_heads_must_divide_hidden():
    with pytest.raises(SelfsupError, match="not a multiple"):
        build_bert(100, hidden=30, heads=4)
