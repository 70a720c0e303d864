"""Masked-token accuracy: how well a BERT/ALBERT pretraining model fills in masked tokens of held-out text.

It counts every position the masking rule selected (the 80% [MASK], 10% random and 10% kept alike), as BERT's
run_pretraining.py evaluation does; the [MASK]-only accuracy is reported beside it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn
from tqdm import tqdm
from transformers import AlbertForPreTraining, PreTrainedTokenizerFast

from .corpus import Document
from .masking import MaskingCollator
from .pairs import LABEL_KEY, Task, pair_examples


def _pair_task(model: nn.Module) -> Task:
    return "sop" if isinstance(model, AlbertForPreTraining) else "nsp"


@torch.no_grad()
def masked_token_accuracy(model: nn.Module, tokenizer: PreTrainedTokenizerFast, documents: Sequence[Document],
                          max_len: int = 128, seed: int = 0, batch_size: int = 32, whole_word: bool = False,
                          task: Task | None = None) -> dict[str, float]:
    """How well a BertForPreTraining / AlbertForPreTraining fills in masked tokens of `documents` (held-out text).

    The documents become pair examples as in pretraining (pair_examples: NSP for BERT, SOP for ALBERT unless
    `task` says; seeded) and are masked by MaskingCollator (15%, 80/10/10; `whole_word` as the model was trained)
    with a generator seeded by `seed`, so two models see the same masks. Returns {"mlm": argmax accuracy over every
    selected position, "mlm_masked_only": over those shown as [MASK], task: NSP/SOP accuracy, "masked_tokens": how
    many positions were scored, "examples": how many pairs}."""
    task = task or _pair_task(model)
    examples = sorted(pair_examples(documents, tokenizer, task, max_len=max_len, seed=seed),
                      key=lambda e: len(e["input_ids"]))  # similar lengths per batch
    collate = MaskingCollator(tokenizer, whole_word=whole_word, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counts: Counter[str] = Counter()
    for start in tqdm(range(0, len(examples), batch_size), desc="masked tokens", leave=False, disable=None):
        batch = collate(examples[start:start + batch_size])
        labels, pair_label = batch.pop("labels"), batch.pop(LABEL_KEY[task])  # (B, L), (B,)
        out = model(**{k: v.to(device) for k, v in batch.items()})
        selected = labels != -100  # (B, L)
        right = out.prediction_logits.argmax(-1).cpu()[selected] == labels[selected]  # (S,)
        shown_mask = batch["input_ids"][selected] == tokenizer.mask_token_id  # (S,)
        pair_logits = out.sop_logits if task == "sop" else out.seq_relationship_logits  # (B, 2)
        counts.update(selected=int(selected.sum()), right=int(right.sum()), masks=int(shown_mask.sum()),
                      right_masks=int(right[shown_mask].sum()),
                      pairs_right=int((pair_logits.argmax(-1).cpu() == pair_label).sum()))
    model.train(was_training)
    return {"mlm": counts["right"] / max(counts["selected"], 1),
            "mlm_masked_only": counts["right_masks"] / max(counts["masks"], 1),
            task: counts["pairs_right"] / len(examples), "masked_tokens": counts["selected"],
            "examples": len(examples)}
