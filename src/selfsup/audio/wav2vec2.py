"""wav2vec 2.0 pretraining (Baevski et al. 2020): the networks from transformers, the self-supervised task here.

  waves ─► normalise ─► CNN encoder ─► z (B, T, C) ─► LayerNorm ─┬─► projection ─► mask spans ─► transformer ─► c
                                                                   └─► quantiser at the masked steps ─► q
  loss = contrastive(c, q; K distractors) + alpha * diversity + lambda * mean(z^2)

The networks (feature encoder, feature projection, learned mask embedding, transformer, Gumbel product
quantiser, the two final projections) are transformers' Wav2Vec2ForPreTraining's submodules, built from a config
with random weights and kept under its names (wav2vec2.*, quantizer.*, project_hid.*, project_q.*), so the state
dict loads into Wav2Vec2ForPreTraining; its forward and its loss are not used. Masks, distractors, losses and
the temperature schedule are selfsup's (span_masking.py, losses/wav2vec2.py).

Defaults are sized for a CPU: the paper's 7 conv layers with its strides (5,2,2,2,2,2,2) and kernels
(10,3,3,3,3,2,2), i.e. 20 ms steps (320x down-sampling) and a 400-sample (25 ms) receptive field, but 128 channels
instead of 512 (the CNN's first layers, at 3.2 kHz and 1.6 kHz, cost most of a step: 256 channels doubles the
time); a 4-layer transformer, hidden 256, 4 heads, FFN 1024. BASE is hidden 768, layers 12, heads 12,
intermediate 3072, conv_dim 512. Self-supervised task at the paper's values: mask p 0.065 span 10, K = 100,
tau 0.1, G = 2 codebooks x V = 320 entries, codewords of 256 / G, final dim 256, alpha 0.1, lambda 10, Gumbel
temperature 2 -> 0.5. Normalisation follows the paper's LARGE configuration, which pairs these three: waveform
normalisation per utterance, LayerNorm in every conv layer (each step normalised on its own, so padding does
not change the valid steps' features, unlike BASE's GroupNorm over time) and a pre-LN transformer (trains from
scratch without a long warm-up).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.modeling_outputs import Wav2Vec2BaseModelOutput

from selfsup.audio.span_masking import decay_to_reach, gumbel_temperature, sample_distractors, span_mask
from selfsup.losses.wav2vec2 import contrastive_loss, diversity_loss, perplexity

STRIDES = (5, 2, 2, 2, 2, 2, 2)  # paper sec. 4.2: 320x down-sampling, a step every 20 ms at 16 kHz
KERNELS = (10, 3, 3, 3, 3, 2, 2)  # receptive field 400 samples


def normalise(waves: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """waves (B, S), valid (B, S) bool -> (B, S): zero mean, unit variance over each utterance's valid samples,
    padding set to 0 (as transformers' Wav2Vec2FeatureExtractor with do_normalize)."""
    w = valid.to(waves.dtype)
    n = w.sum(1, keepdim=True)  # (B, 1)
    mean = (waves * w).sum(1, keepdim=True) / n
    var = ((waves - mean).pow(2) * w).sum(1, keepdim=True) / n
    return (waves - mean) / torch.sqrt(var + 1e-7) * w


class Wav2Vec2Pretraining(nn.Module):
    """wav2vec 2.0's network and self-supervised loss.

    forward(waves (B, S) float 16 kHz audio, zero-padded; lengths (B,) long valid samples, each >= 400) ->
    {"loss", "contrastive", "diversity", "feature_penalty", "perplexity" (soft, the one in the diversity term),
    "code_perplexity" (of the hard codes), "mask_fraction", "gumbel_temperature"}, all scalars.
    `generator` seeds the masks and distractors; dropout, LayerDrop and the Gumbel noise use torch's global RNG
    (transformers' modules draw from it). Call set_step before each update to anneal the Gumbel temperature.
    Any other keyword goes to transformers.Wav2Vec2Config (e.g. conv_bias, num_conv_pos_embeddings).
    """

    def __init__(self, hidden: int = 256, layers: int = 4, heads: int = 4, intermediate: int = 1024,
                 conv_dim: int | Sequence[int] = 128, codebooks: int = 2, codewords: int = 320,
                 codevector_dim: int = 256, final_dim: int = 256, dropout: float = 0.1, layerdrop: float = 0.05,
                 mask_prob: float = 0.065, mask_span: int = 10, distractors: int = 100, temperature: float = 0.1,
                 diversity_weight: float = 0.1, feature_penalty_weight: float = 10.0, gumbel_start: float = 2.0,
                 gumbel_end: float = 0.5, gumbel_decay: float | None = 0.999995, **config_kwargs):
        super().__init__()
        conv = (conv_dim,) * len(STRIDES) if isinstance(conv_dim, int) else tuple(conv_dim)
        settings = dict(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=intermediate,
            conv_dim=conv, conv_stride=STRIDES, conv_kernel=KERNELS, conv_bias=True, feat_extract_norm="layer",
            do_stable_layer_norm=True,
            # dropouts as the paper's code: 0.1 in the transformer, on its input and on the quantiser's input
            hidden_dropout=dropout, attention_dropout=dropout, activation_dropout=0.0, feat_proj_dropout=dropout,
            feat_quantizer_dropout=dropout, layerdrop=layerdrop,
            mask_time_prob=mask_prob, mask_time_length=mask_span,  # > 0 makes HF create the mask embedding
            num_codevector_groups=codebooks, num_codevectors_per_group=codewords, codevector_dim=codevector_dim,
            proj_codevector_dim=final_dim, num_negatives=distractors, contrastive_logits_temperature=temperature,
            diversity_loss_weight=diversity_weight)
        self.config = Wav2Vec2Config(**{**settings, **config_kwargs})
        # Built whole for HF's initialisation (the quantiser's codebook is uninitialised memory until post_init).
        net = Wav2Vec2ForPreTraining(self.config)
        self.wav2vec2, self.quantizer = net.wav2vec2, net.quantizer
        self.dropout_features, self.project_hid, self.project_q = net.dropout_features, net.project_hid, net.project_q
        self.mask_prob, self.mask_span, self.K = mask_prob, mask_span, distractors
        self.temperature, self.alpha, self.penalty_weight = temperature, diversity_weight, feature_penalty_weight
        self.gumbel_start, self.gumbel_end, self.gumbel_decay = gumbel_start, gumbel_end, gumbel_decay
        self.quantizer.temperature = gumbel_start

    def set_step(self, step: int, max_steps: int) -> None:
        """The Gumbel temperature for update `step` (fairseq's set_num_updates): max(start decay^step, end);
        gumbel_decay None picks the decay that reaches `end` at max_steps (short runs)."""
        decay = self.gumbel_decay
        if decay is None:
            decay = decay_to_reach(max_steps, self.gumbel_start, self.gumbel_end)
        self.quantizer.temperature = gumbel_temperature(step, self.gumbel_start, self.gumbel_end, decay)

    def steps(self, lengths: torch.Tensor | int) -> torch.Tensor:
        """Sample lengths -> CNN feature steps: floor((L - kernel) / stride) + 1 through the 7 layers."""
        return self.wav2vec2._get_feat_extract_output_lengths(lengths)

    def encode(self, waves: torch.Tensor, lengths: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, Wav2Vec2BaseModelOutput]:
        """-> (z (B, T, C) the raw CNN features, HF's output: last_hidden_state (B, T, H) the transformer's,
        with `mask` (B, T) steps replaced by the learned mask embedding; extract_features (B, T, C) LayerNorm(z))."""
        valid = torch.arange(waves.shape[1], device=waves.device) < lengths[:, None]  # (B, S)
        kept = []  # Wav2Vec2Model returns only LayerNorm(z); the penalty is on z itself
        hook = self.wav2vec2.feature_extractor.register_forward_hook(lambda module, args, z: kept.append(z))
        try:
            out = self.wav2vec2(normalise(waves, valid), attention_mask=valid.long(), mask_time_indices=mask)
        finally:
            hook.remove()
        return kept[0].transpose(1, 2), out

    def quantise(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (N, C) -> (codewords (N, G d/G), logits (N, G, V)). HF's quantiser picks the codewords (hard
        Gumbel-softmax with straight-through gradients in train mode, argmax in eval mode); the logits are
        recomputed for the diversity term because the perplexity HF returns comes from hard codes in eval mode."""
        q, _ = self.quantizer(y[None])  # (1, N, G d/G)
        logits = self.quantizer.weight_proj(y).view(len(y), self.quantizer.num_groups, self.quantizer.num_vars)
        return q[0], logits

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        B, S = waves.shape
        steps = self.steps(lengths)  # (B,)
        if (steps < 1).any():
            raise ValueError(f"every clip needs at least 400 samples (one CNN step), got lengths {lengths.tolist()}")
        T = int(self.steps(S))
        mask = span_mask(steps, T, self.mask_prob, self.mask_span, generator)  # (B, T)
        distractors = sample_distractors(mask, self.K, generator)  # (B, T, K)
        z, out = self.encode(waves, lengths, mask)
        c = self.project_hid(out.last_hidden_state)  # (B, T, D) context at every step
        y = self.dropout_features(out.extract_features)[mask]  # (N, C) unmasked features at the masked steps
        q, logits = self.quantise(y)  # (N, G d/G), (N, G, V)
        q = torch.zeros_like(c).masked_scatter(mask[..., None], self.project_q(q).to(c.dtype))  # (B, T, D)
        probs = logits.float().softmax(-1)  # (N, G, V)
        valid = torch.arange(T, device=waves.device) < steps[:, None]  # (B, T)
        L_m = contrastive_loss(c, q, mask, distractors, self.temperature)
        L_d = diversity_loss(probs)
        L_f = z.float().pow(2).mean(-1)[valid].mean()  # mean squared CNN feature over the valid steps
        hard = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()  # (N, G, V)
        return {"loss": L_m + self.alpha * L_d + self.penalty_weight * L_f, "contrastive": L_m, "diversity": L_d,
                "feature_penalty": L_f, "perplexity": perplexity(probs.detach()),
                "code_perplexity": perplexity(hard), "mask_fraction": mask.sum() / valid.sum(),
                "gumbel_temperature": torch.tensor(float(self.quantizer.temperature), device=waves.device)}

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """waves (B, S), lengths (B,) -> (B, H): the transformer's outputs averaged over the valid steps, no
        masking. Runs in whatever mode the caller set: for frozen features call it under eval() and no_grad."""
        steps, T = self.steps(lengths), int(self.steps(waves.shape[1]))
        none = torch.zeros(waves.shape[0], T, dtype=torch.bool, device=waves.device)  # else HF masks in train mode
        h = self.encode(waves, lengths, none)[1].last_hidden_state  # (B, T, H)
        w = (torch.arange(T, device=waves.device) < steps[:, None]).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1)
