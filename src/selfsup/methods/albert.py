"""ALBERT (Lan et al. 2020): BERT's masked LM with a factorised embedding (V x E, then E x H), one set of layer
parameters shared by all layers, and sentence-order prediction (two consecutive segments, swapped for negatives)
instead of next-sentence prediction; a SentencePiece-style unigram tokenizer.
    L = CE(MLM head(h_i), x_i) over the selected positions  +  CE(SOP head(pooled [CLS]), in order / swapped)
"""

from dataclasses import dataclass
from typing import ClassVar

import torch

from selfsup.methods.bert import BERT, BERTConfig
from selfsup.methods.registry import register


@dataclass
class ALBERTConfig(BERTConfig):
    """Paper (base): E 128, hidden 768, 12 layers, 12 heads, vocabulary 30k, no dropout, LAMB lr 0.00176 at batch
    4096. The learning rate is BERT's here (5e-4 at batch 32)."""

    embedding_size: int = 128  # E: word embeddings are V x E, projected to the hidden size H
    dropout: float = 0.0


@register
class ALBERT(BERT):
    name = "albert"
    paper = "Lan et al., ALBERT: A Lite BERT for Self-supervised Learning of Language Representations, ICLR 2020"
    deviations = ("network sized for a CPU (4 layers, hidden 256, E 128, vocabulary 8000); AdamW instead of LAMB; "
                  "no n-gram masking (whole-word masking is an option); pairs built once per run")
    config_class = ALBERTConfig
    tokenizer_kind: ClassVar[str] = "unigram"
    task: ClassVar[str] = "sop"

    @staticmethod
    def build_model(config: ALBERTConfig, vocab_size: int, pad_token_id: int) -> torch.nn.Module:
        from selfsup.text import build_albert

        return build_albert(vocab_size, config.embedding_size, config.hidden, config.layers, config.heads,
                            config.intermediate, config.max_len, config.dropout, pad_token_id)

    def heads(self, sequence: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predictions(sequence), self.model.sop_classifier(pooled)
