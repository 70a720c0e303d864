"""BERT (Devlin et al. 2019): masked language modelling + next-sentence prediction on a tokenizer trained on the
user's corpus.

Per batch of [CLS] A [SEP] B [SEP] pairs (text/pairs.py), 15% of the ordinary tokens are selected (80% [MASK],
10% a random token, 10% kept; text/masking.py, dynamic: new masks every batch):
    L = CE(MLM head(h_i), x_i) averaged over the selected positions i  +  CE(NSP head(pooled [CLS]), IsNext/NotNext)
The MLM head runs on the selected positions only (as BERT's own code gathers them), not on all B x L x V logits.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from selfsup.errors import SelfsupError
from selfsup.methods.base import Method, MethodConfig
from selfsup.methods.registry import register


@dataclass
class BERTConfig(MethodConfig):
    """Paper: hidden 768, 12 layers, 12 heads, intermediate 3072, 512 positions, WordPiece vocabulary 30k, Adam lr 1e-4
    at batch 256, weight decay 0.01, warm-up 10k of 1M steps. The network defaults here are sized for a CPU."""

    vocab_size: int = 8000  # WordPiece vocabulary learned from --data (smaller on a small corpus)
    lowercase: bool = True
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    max_len: int = 128  # tokens per pair, [CLS] and [SEP]s included
    dropout: float = 0.1
    mask_probability: float = 0.15
    whole_word: bool = False  # select whole words (every piece of a chosen word) instead of single tokens
    short_seq_prob: float = 0.1  # share of pairs built to a random shorter length
    pooling: str = "mean"  # frozen features and fine-tuning: mean of the text's tokens' final states, or [CLS]'s
    optimizer: str = "adamw"
    lr: float = 4e-3  # for a batch of 256: 5e-4 at batch 32 (paper: 1e-4 at 256, for 1M steps)
    weight_decay: float = 0.01  # never applied to biases and norm layers
    warmup_fraction: float = 0.1


@register
class BERT(Method):
    name = "bert"
    paper = "Devlin et al., BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding, NAACL 2019"
    deviations = ("network sized for a CPU (4 layers, hidden 256, vocabulary 8000; --set hidden=768 layers=12 heads=12 "
                  "intermediate=3072 for BERT-base); pairs built once per run, not duplicated 10x with new masks; "
                  "10% warm-up then cosine decay instead of 1% then linear; lr 5e-4 at batch 32 instead of 1e-4 at "
                  "256 (in 600 CPU steps: held-out masked-token accuracy 0.145 against 0.098 at 1e-4 at batch 32)")
    modality = "text"
    config_class = BERTConfig
    run_defaults: ClassVar[dict[str, Any]] = {"data": "bible", "num_workers": 0}
    tokenizer_kind: ClassVar[str] = "wordpiece"
    task: ClassVar[str] = "nsp"

    def __init__(self, config: BERTConfig, data_meta: dict[str, Any]):
        super().__init__(config, data_meta)
        from selfsup.text import MaskingCollator, tokenizer_from_json

        self.tokenizer = tokenizer_from_json(data_meta["tokenizer"])
        self.collator = MaskingCollator(self.tokenizer, config.mask_probability, config.whole_word)
        self.model = self.build_model(config, len(self.tokenizer), self.tokenizer.pad_token_id)
        self.backbone = self.model.base_model  # BertModel: what evaluation and export use

    @staticmethod
    def build_model(config: BERTConfig, vocab_size: int, pad_token_id: int) -> torch.nn.Module:
        from selfsup.text import build_bert

        return build_bert(vocab_size, config.hidden, config.layers, config.heads, config.intermediate, config.max_len,
                          config.dropout, pad_token_id)

    @classmethod
    def open_data(cls, config: BERTConfig, data: str, seed: int,
                  data_meta: dict[str, Any] | None = None) -> tuple[list[tuple[dict]], dict[str, Any]]:
        """Documents from `data` -> a tokenizer trained on them (or the checkpoint's) -> NSP/SOP pair examples."""
        from selfsup.text import pair_examples, tokenizer_from_json, tokenizer_to_json, train_tokenizer

        documents = pretraining_documents(data)
        if data_meta is None:
            texts = (s for d in documents for s in d.segments)
            tokenizer = train_tokenizer(texts, cls.tokenizer_kind, config.vocab_size, config.lowercase)
            data_meta = {"tokenizer": tokenizer_to_json(tokenizer), "task": cls.task}
        tokenizer = tokenizer_from_json(data_meta["tokenizer"])
        examples = pair_examples(documents, tokenizer, cls.task, config.max_len, config.short_seq_prob, seed)
        return [(e,) for e in examples], data_meta

    def collate(self, examples: list[tuple[dict]]) -> dict[str, torch.Tensor]:
        return self.collator([e for (e,) in examples])

    def heads(self, sequence: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, H) hidden states at the selected positions, (B, H) pooled [CLS] -> (M, V) MLM, (B, 2) NSP logits."""
        return self.model.cls.predictions(sequence), self.model.cls.seq_relationship(pooled)

    def training_step(self, batch: dict[str, torch.Tensor],
                      indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from selfsup.text import LABEL_KEY

        out = self.backbone(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                            attention_mask=batch["attention_mask"])
        selected = batch["labels"] != -100  # (B, L)
        mlm_logits, pair_logits = self.heads(out.last_hidden_state[selected], out.pooler_output)  # (M, V), (B, 2)
        targets = batch["labels"][selected]  # (M,)
        mlm = F.cross_entropy(mlm_logits, targets)
        pair = F.cross_entropy(pair_logits, batch[LABEL_KEY[self.task]])
        with torch.no_grad():
            mlm_accuracy = (mlm_logits.argmax(1) == targets).float().mean()
            pair_accuracy = (pair_logits.argmax(1) == batch[LABEL_KEY[self.task]]).float().mean()
        return {"loss": mlm + pair, "mlm_loss": mlm, f"{self.task}_loss": pair, "mlm_accuracy": mlm_accuracy,
                f"{self.task}_accuracy": pair_accuracy}

    def eval_batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Texts -> the tokenizer's padded input_ids, token_type_ids, attention_mask (B, L), each text as
        [CLS] text [SEP] cut to the positions the network has."""
        return dict(self.tokenizer(list(texts), truncation=True, max_length=self.config.max_len, padding=True,
                                   return_tensors="pt"))

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenized texts -> (B, H) pooled final hidden states (`pool`, config.pooling)."""
        return PooledText(self.backbone, self.config.pooling, self.special_ids())(batch)

    def finetune_encoder(self) -> torch.nn.Module:
        return PooledText(self.backbone, self.config.pooling, self.special_ids())

    def special_ids(self) -> list[int]:
        return [self.tokenizer.cls_token_id, self.tokenizer.sep_token_id]


POOLINGS = ("mean", "cls")


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, pooling: str,
         special_ids: list[int]) -> torch.Tensor:
    """hidden (B, L, H) -> (B, H): the [CLS] state (position 0), or the mean over the text's own tokens (attended,
    not [CLS]/[SEP]: "mean" and "cls" are disjoint views of the input). A text without tokens pools to zeros."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise SelfsupError(f"unknown pooling {pooling!r}: pass {' or '.join(POOLINGS)}")
    keep = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    keep = keep.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)


class PooledText(torch.nn.Module):
    """A BertModel/AlbertModel (the same module, not a copy) whose tokenized batch (B, L) gives pooled (B, H)."""

    def __init__(self, encoder: torch.nn.Module, pooling: str, special_ids: list[int]):
        super().__init__()
        self.encoder, self.pooling, self.special_ids = encoder, pooling, special_ids

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state  # (B, L, H)
        return pool(hidden, batch["input_ids"], batch["attention_mask"], self.pooling, self.special_ids)


def pretraining_documents(data: str) -> list:
    """`--data` for BERT/ALBERT: "bible" is the train side of the genre split (`selfsup eval ... --data bible-genres`
    tests on books the encoder never read, and `eval mlm` fills in their tokens), "bible-all" every chapter, else a
    folder of .txt files, a .txt or a .jsonl file."""
    from selfsup.text import genre_split, load_documents, verse_documents

    if data == "bible":
        return verse_documents(genre_split(seed=0)[0])
    return load_documents("bible" if data == "bible-all" else data)
