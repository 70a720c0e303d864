"""CAE's objective (Chen et al., "Context Autoencoder for Self-Supervised Representation Learning", IJCV 2023,
sec. 3.4): L = ℓ_y(Y_m, Ȳ_m) + λ · ℓ_z(Z_m, sg[Z̄_m]), both over the masked patches only."""

import torch
from torch import nn


class CAELoss(nn.Module):
    """Decoder term ℓ_y: the mean over masked patches of each patch's mean squared error against its target
    (per-patch normalised pixels here, DALL-E tokens with cross-entropy in the paper). Alignment term ℓ_z: the
    mean squared error between the regressor's predicted latents Z_m and the encoder's latents Z̄_m of the masked
    patches, over every element. Both targets are detached (sg[·]): gradients reach the predictions only.

    forward(pixels (B, m, P), pixel_targets (B, m, P), latents (B, m, D), latent_targets (B, m, D)) ->
    (L, ℓ_y, ℓ_z), three scalars; λ = align_weight (paper: 2)."""

    def __init__(self, align_weight: float = 2.0):
        super().__init__()
        self.align_weight = align_weight

    def forward(self, pixels: torch.Tensor, pixel_targets: torch.Tensor, latents: torch.Tensor,
                latent_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        decoder = (pixels - pixel_targets.detach()).pow(2).mean()  # (B, m, P) -> ℓ_y; every row a masked patch
        align = (latents - latent_targets.detach()).pow(2).mean()  # (B, m, D) -> ℓ_z
        return decoder + self.align_weight * align, decoder, align
