"""Audio probes on frozen pooled features: kNN (k=20, temperature 0.07) and a linear probe, for a trained
encoder, a random-init one, or the MFCC baseline."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from selfsup.errors import SelfsupError
from selfsup.eval.knn import knn_predict
from selfsup.eval.linear import linear_probe

from .data import AudioClips, collate_waveforms
from .mfcc import mfcc_features

Embed = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (waves (B, T), lengths (B,)) -> (B, D)


def probe(features_train: torch.Tensor | np.ndarray, labels_train: torch.Tensor | np.ndarray,
          features_test: torch.Tensor | np.ndarray, labels_test: torch.Tensor | np.ndarray,
          k: int = 20) -> dict[str, float]:
    """{"knn": top-1, "linear": top-1} on the test features (M, D) of classifiers fit on the train ones (N, D)."""
    train_x, test_x = torch.as_tensor(features_train).float(), torch.as_tensor(features_test).float()
    train_y, test_y = torch.as_tensor(labels_train).long(), torch.as_tensor(labels_test).long()
    knn = knn_predict(train_x, train_y, test_x, k=k, temperature=0.07)
    linear = torch.as_tensor(linear_probe(train_x.numpy(), train_y.numpy(), test_x.numpy()))
    return {"knn": float((knn == test_y).float().mean()), "linear": float((linear == test_y).float().mean())}


@torch.no_grad()
def pooled_features(embed: Embed, clips: AudioClips, batch_size: int = 64, num_workers: int = 0,
                    desc: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, labels (N,), -1 when unlabeled) of every clip, in order: `embed` maps
    zero-padded waves (B, T) with their lengths (B,) to pooled features (B, D)."""
    _check_not_empty(clips)
    loader = DataLoader(clips, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_waveforms)
    features, labels = [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=None):
        waves, lengths = batch[0], batch[1]
        features.append(embed(waves, lengths).float().cpu())
        labels.append(batch[2] if len(batch) == 3 else torch.full((len(lengths),), -1, dtype=torch.int64))
    return torch.cat(features), torch.cat(labels)


def mfcc_dataset_features(clips: AudioClips, num_workers: int = 0,
                          desc: str = "MFCC features") -> tuple[torch.Tensor, torch.Tensor]:
    """(mfcc_features of every clip (N, MFCC_DIM), labels (N,), -1 when unlabeled), in order; decoding and MFCCs
    run in `num_workers` DataLoader processes when given (decoding takes most of the time)."""
    _check_not_empty(clips)
    loader = DataLoader(_MfccClips(clips), batch_size=None, num_workers=num_workers)
    features, labels = [], []
    for f, label in tqdm(loader, total=len(clips), desc=desc, leave=False, disable=None):
        features.append(f)
        labels.append(label)
    return torch.stack(features), torch.tensor(labels, dtype=torch.int64)


class _MfccClips(Dataset):
    """(mfcc_features, label or -1) of each clip."""

    def __init__(self, clips: AudioClips):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.clips[i]
        return mfcc_features(item[0], self.clips.sample_rate), item[1] if len(item) == 2 else -1


def _check_not_empty(clips: AudioClips) -> None:
    if len(clips) == 0:
        raise SelfsupError(f"no clips to evaluate in {getattr(clips, 'name', 'the data set')}")
