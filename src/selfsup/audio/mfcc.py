"""The MFCC baseline for audio probes: a clip's mel-frequency cepstral coefficients and their deltas, pooled by
mean and standard deviation over time (python_speech_features computes them: 25 ms Hamming windows every 10 ms,
40 mel filters, the first coefficient replaced by the frame's log energy)."""

from __future__ import annotations

import numpy as np
import python_speech_features as psf
import torch

N_MFCC = 20
MFCC_DIM = 4 * N_MFCC  # mean and std of (MFCC, delta)


def mfcc_features(waveform: torch.Tensor, sample_rate: int = 16_000) -> torch.Tensor:
    """(MFCC_DIM,) float32: mean then std over time of N_MFCC MFCCs followed by their deltas, of a waveform (T,)."""
    signal = waveform.detach().cpu().double().numpy()
    nfft = 1 << int(np.ceil(np.log2(0.025 * sample_rate)))  # the window fits in one FFT (512 at 16 kHz)
    mfcc = psf.mfcc(signal, sample_rate, numcep=N_MFCC, nfilt=40, nfft=nfft, winfunc=np.hamming)  # (frames, N_MFCC)
    frames = np.concatenate([mfcc, psf.delta(mfcc, 2)], axis=1)  # (frames, 2 N_MFCC)
    return torch.from_numpy(np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32))
