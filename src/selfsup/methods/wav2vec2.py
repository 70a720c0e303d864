"""wav2vec 2.0 (Baevski et al. 2020) on raw 16 kHz audio, trained by selfsup's loop.

The network and the loss are audio/wav2vec2.py's Wav2Vec2Pretraining:
    L = L_m (contrastive: c_t against its quantised target q_t and K distractors from other masked steps, cosine / τ)
        + α L_d (codebook diversity) + λ mean(z²) (feature penalty)
This file adds the data (audio/ clips, random crops), the batch (zero-padded waves + lengths) and the Gumbel
temperature schedule, kept as a buffer so a resumed run continues it.
"""

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from selfsup.methods.base import Method, MethodConfig
from selfsup.methods.registry import register


@dataclass
class Wav2Vec2PretrainingConfig(MethodConfig):
    """Paper (BASE): 7-layer CNN (512 channels), 12 layers, hidden 768, 12 heads, FFN 3072; Adam lr 5e-4 with 8%
    warm-up; crops of at most 250k samples (15.6 s). The network defaults here are sized for a CPU."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 1024
    conv_dim: int = 128  # paper 512; 256 made the CNN three quarters of a CPU step
    codebooks: int = 2  # G
    codewords: int = 320  # V per codebook
    codevector_dim: int = 256
    final_dim: int = 256
    dropout: float = 0.1
    layerdrop: float = 0.05
    mask_prob: float = 0.065  # p: each step starts a masked span with this probability
    mask_span: int = 10  # M
    distractors: int = 100  # K
    temperature: float = 0.1  # τ of the contrastive logits
    diversity_weight: float = 1.0  # α; paper 0.1, at which batches of 16 short clips collapsed the codebooks
    feature_penalty_weight: float = 10.0  # λ
    gumbel_start: float = 2.0
    gumbel_end: float = 0.5
    gumbel_decay: float | None = None  # per update; None: reach gumbel_end at the last step (paper: 0.999995)
    max_seconds: float = 2.0  # random crops of at most this long
    optimizer: str = "adamw"
    lr: float = 8e-3  # for a batch of 256 clips: 5e-4 (the paper's) at batch 16
    weight_decay: float = 0.01  # never applied to biases and norm layers
    warmup_fraction: float = 0.08


@register
class Wav2Vec2(Method):
    name = "wav2vec2"
    paper = "Baevski et al., wav2vec 2.0: A Framework for Self-Supervised Learning of Speech Representations, NeurIPS 2020"
    deviations = ("network sized for a CPU (CNN 128 channels, 4 layers, hidden 256); LayerNorm CNN and pre-LN "
                  "transformer (the paper's LARGE variant) for stable training from scratch; Gumbel temperature "
                  "reaches 0.5 at the end of the run (paper: x0.999995 per update); crops of 2 s; diversity weight 1.0 "
                  "(paper 0.1: with ~400 masked steps per batch instead of ~100k, both codebooks collapsed to one "
                  "entry within 30 steps at 0.1); lr 5e-4 at batch 16 with warm-up then cosine (paper: 5e-4 for "
                  "~1.6 h of audio per batch, linear decay)")
    modality = "audio"
    config_class = Wav2Vec2PretrainingConfig
    run_defaults: ClassVar[dict[str, Any]] = {"data": "tuxpaint", "batch_size": 16}

    def __init__(self, config: Wav2Vec2PretrainingConfig, data_meta: dict[str, Any]):
        super().__init__(config, data_meta)
        from selfsup.audio.wav2vec2 import Wav2Vec2Pretraining

        # the network's options by name, from this config (whose defaults are the ones in force)
        network = inspect.signature(Wav2Vec2Pretraining).parameters
        self.model = Wav2Vec2Pretraining(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                                            if f.name in network})
        self.backbone = self.model.wav2vec2  # Wav2Vec2Model: what evaluation and export use
        self.register_buffer("gumbel_temperature", torch.tensor(config.gumbel_start))  # saved: resume continues it

    @classmethod
    def open_data(cls, config: Wav2Vec2PretrainingConfig, data: str, seed: int,
                  data_meta: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        from selfsup.audio import SAMPLE_RATE, open_audio

        clips = open_audio(data, max_seconds=config.max_seconds)  # items (waveform (T,),), cropped at random
        return clips, data_meta or {"sample_rate": SAMPLE_RATE}

    def collate(self, examples: list[tuple[torch.Tensor]]) -> dict[str, torch.Tensor]:
        from selfsup.audio import collate_waveforms

        waves, lengths = collate_waveforms(examples)  # (B, S) zero-padded, (B,)
        return {"waves": waves, "lengths": lengths}

    def training_step(self, batch: dict[str, torch.Tensor],
                      indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.model.quantizer.temperature = float(self.gumbel_temperature)
        return self.model(batch["waves"], batch["lengths"])

    def after_step(self, step: int, max_steps: int) -> None:
        self.model.set_step(step, max_steps)
        self.gumbel_temperature.fill_(self.model.quantizer.temperature)

    def eval_batch(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Waveforms (T,) -> {"waves": (B, S) zero-padded, "lengths": (B,)}."""
        return self.collate([(w,) for w in waves])

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """{"waves": (B, S), "lengths": (B,)} -> (B, H) the transformer's outputs averaged over the valid steps."""
        return self.model.embed(batch["waves"], batch["lengths"])
