"""The document image tokenizer: a VQ-VAE (van den Oord et al., "Neural Discrete Representation Learning", NeurIPS
2017) whose code grid matches a ViT's patch grid, one code per P x P patch (P = 16: 14 x 14 codes of a 224 px page).

DiT (Li et al., 2022) retrained DALL-E's dVAE on documents and took its code ids as BEiT's targets. No pretrained
tokenizer can be downloaded here, so selfsup trains its own on pages. A VQ-VAE rather than a Gumbel-softmax dVAE
(Ramesh et al., 2021): its code of a patch is a deterministic argmin, so the BEiT target of a page is one fixed grid
that can be computed once and cached (`codes.py`); it needs no temperature or KL-weight schedule; and its loss has an
exact closed form to test against a float64 reference (tests/document/test_vqvae.py).

Loss (eq. 3, with means over elements instead of sums, so the terms do not grow with the image size):
    L = ||x - D(z_q)||^2 + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2,   z_q = z_e + sg[e - z_e]  (straight-through)
with e the nearest codebook vector of each encoder output z_e.
Deviations: the codebook is initialised from encoder outputs of the first batch (as k-means-style initialisations in
Jukebox, Dhariwal et al. 2020, and SoundStream do) and a code unused for RESTART_AFTER steps is moved onto an encoder
output of the current batch drawn with probability proportional to its squared distance from the nearest live code
(Jukebox's random restarts, seeded as k-means++ seeds: Arthur & Vassilvitskii 2007), so a restart never lands on a
copy of an existing code (a blank patch); both only keep codes in use, the loss is eq. 3's.
The encoder (encoder = "patch", the default) codes each P x P patch from its own pixels only: the convolutions run on
every patch as a separate image, so identical patches get identical codes. The paper's encoder (and this module's
before, encoder = "conv") runs on the whole page: its receptive field spans ~9 patches, so a blank patch's code
depended on the text around it (312 codes for the blank patches of doc-pages), a target DiT cannot predict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import SelfsupError


@dataclass
class TokenizerConfig:
    """patch: P, pixels per code side (a power of 2: log2(P) stride-2 convolutions); codes: K, codebook size;
    dim: D, code vector size; width: channels of the deepest convolutions; beta: commitment weight (eq. 3);
    image_size: input side (a multiple of P); channels: 1 for grayscale pages; encoder: "patch" (each code a function
    of its own patch's pixels) or "conv" (the whole page through the convolutions, receptive field ~9 patches)."""

    patch: int = 16
    codes: int = 512
    dim: int = 64
    width: int = 64
    beta: float = 0.25
    image_size: int = 224
    channels: int = 1
    encoder: str = "patch"

    def check(self) -> None:
        if self.patch < 2 or self.patch & (self.patch - 1):
            raise SelfsupError(f"tokenizer patch {self.patch} is not a power of 2: pass 8, 16 or 32")
        if self.image_size % self.patch:
            raise SelfsupError(f"image size {self.image_size} is not a multiple of the patch {self.patch}: pass "
                               f"a multiple, e.g. {self.patch * (self.image_size // self.patch)}")
        if self.codes < 2 or self.dim < 1 or self.width < 8 or self.beta < 0:
            raise SelfsupError(f"tokenizer codes {self.codes}, dim {self.dim}, width {self.width}, beta {self.beta}: "
                               "pass codes >= 2, dim >= 1, width >= 8 and beta >= 0")
        if self.encoder not in ENCODERS:
            raise SelfsupError(f"unknown tokenizer encoder '{self.encoder}': pass {' or '.join(ENCODERS)}")


ENCODERS = ("patch", "conv")


def vq_losses(x: torch.Tensor, x_hat: torch.Tensor, z_e: torch.Tensor, e: torch.Tensor, beta: float
              ) -> dict[str, torch.Tensor]:
    """Eq. 3 of van den Oord et al. (2017), each term a mean over elements.

    x, x_hat: (B, C, H, W) image and reconstruction; z_e: (B, D, h, w) encoder output; e: (B, D, h, w) the codebook
    vector chosen for each position (gradients reach the codebook only through `codebook`, the encoder through
    `commit` and, via the straight-through z_q, through `recon`). Returns loss, recon, codebook, commit (scalars).
    """
    recon = F.mse_loss(x_hat, x)  # log p(x | z_q) of a fixed-variance Gaussian, up to constants
    codebook = F.mse_loss(e, z_e.detach())  # ||sg[z_e] - e||^2: moves the codes towards the encoder outputs
    commit = F.mse_loss(z_e, e.detach())  # ||z_e - sg[e]||^2: keeps the encoder near its codes
    return {"loss": recon + codebook + beta * commit, "recon": recon, "codebook": codebook, "commit": commit}


def code_statistics(codes: torch.Tensor, patches: torch.Tensor | None = None) -> dict[str, float | int]:
    """What a set of codes says about collapse, on one basis: all the codes given.

    codes: int64 (N, h, w) of N pages; patches: uint8 (N, C, S, S), the pages themselves (optional). Returns codes_used
    (distinct ids), code_entropy_nats (entropy of the code frequencies), code_perplexity (its exp: the number of equally
    used codes with that entropy); with the pages also blank_share (share of patches all one grey value, e.g. white)
    and blank_codes (distinct codes on those blank patches)."""
    counts = torch.bincount(codes.flatten()).double()
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * p.log()).sum())
    out = {"codes_used": int((counts > 0).sum()), "code_entropy_nats": round(entropy, 4),
           "code_perplexity": round(math.exp(entropy), 2)}
    if patches is not None:
        n, h, w = codes.shape
        tiles = patches.reshape(n, -1, h, patches.shape[-2] // h, w, patches.shape[-1] // w).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(n, h, w, -1)  # (N, h, w, C·P·P)
        blank = (tiles == tiles[..., :1]).all(-1)  # (N, h, w): one grey value over the whole patch
        out.update(blank_share=round(float(blank.double().mean()), 4), blank_codes=int(codes[blank].unique().numel()))
    return out


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """int64 (N,): argmin_k ||z_n - codebook_k||^2 for z (N, D), codebook (K, D)."""
    distances = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1)  # (N, K)
    return distances.argmin(1)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class VQVAE(nn.Module):
    """Pages in, one code per P x P patch out, and back.

    forward(x) with x float (B, C, S, S) in [0, 1] (uint8 / 255) -> dict: loss, recon, codebook, commit (scalars),
    x_hat (B, C, S, S), codes int64 (B, S/P, S/P), batch_perplexity (exp of the entropy of this batch's code
    frequencies: at most B·h·w, blind to codes no page of the batch uses; `code_statistics` gives the whole set's).
    tokenize(x) -> codes (B, S/P, S/P) without gradients; decode_codes(codes) -> images (B, C, S, S).
    """

    RESTART_AFTER = 50  # steps a code may go unused before it is moved onto an encoder output

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        config.check()
        self.config = config
        n = int(math.log2(config.patch))
        widths = [max(8, config.width >> (n - 1 - i)) for i in range(n)]  # e.g. 8, 16, 32, 64 for P = 16
        down, c = [], config.channels
        for w in widths:  # each halves the side: 4x4 kernels, stride 2, as the VQ-VAE paper's encoder
            down += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU()]
            c = w
        self.encoder = nn.Sequential(*down, nn.Conv2d(c, c, 3, padding=1), _Residual(c), _Residual(c), nn.ReLU(),
                                     nn.Conv2d(c, config.dim, 1))
        up = [nn.Conv2d(config.dim, c, 3, padding=1), _Residual(c), _Residual(c)]
        for w in [*reversed(widths[:-1]), None]:
            up += [nn.ReLU(), nn.ConvTranspose2d(c, w or config.channels, 4, stride=2, padding=1)]
            c = w or config.channels
        self.decoder = nn.Sequential(*up)
        self.codebook = nn.Parameter(torch.randn(config.codes, config.dim) / math.sqrt(config.dim))  # (K, D)
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("last_used", torch.zeros(config.codes, dtype=torch.int64))  # step each code was last used
        self.register_buffer("step", torch.tensor(0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e (B, D, h, w) of x (B, C, S, S); encoder "patch": z_e[:, :, i, j] is a function of the pixels of patch
        (i, j) alone (each patch is zero-padded on its own, as an image of P x P)."""
        if self.config.encoder == "conv":
            return self.encoder(x)
        b, c = x.shape[:2]
        p, n = self.config.patch, x.shape[-1] // self.config.patch
        patches = x.reshape(b, c, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(b * n * n, c, p, p)  # (B·h·w, C, P, P)
        z = self.encoder(patches)  # (B·h·w, D, 1, 1)
        return z.reshape(b, n, n, -1).permute(0, 3, 1, 2)  # (B, D, h, w)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (B, h, w), e (B, D, h, w), the chosen codebook vectors, differentiable w.r.t. the codebook)."""
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
        codes = nearest_codes(flat.detach(), self.codebook.detach())  # (B*h*w,)
        e = self.codebook[codes].view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
        return codes.view(b, h, w), e

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z_e = self.encode(x)  # (B, D, h, w)
        if self.training and not bool(self.initialised):
            self._initialise(z_e.detach())
        codes, e = self.quantize(z_e)
        z_q = z_e + (e - z_e).detach()  # straight-through: forward e, backward identity to z_e
        x_hat = self.decoder(z_q)  # (B, C, S, S)
        out = vq_losses(x, x_hat, z_e, e, self.config.beta)
        counts = torch.bincount(codes.flatten(), minlength=self.config.codes).float()  # (K,)
        p = counts / counts.sum()
        out.update(x_hat=x_hat, codes=codes, batch_perplexity=torch.exp(-(p * torch.log(p + 1e-10)).sum()))
        if self.training:
            self._seen = (z_e.detach(), counts)  # for after_step's restarts
        return out

    @torch.no_grad()
    def after_step(self) -> None:
        """After the optimiser step of a training forward: count code use, restart codes unused for RESTART_AFTER
        steps on random encoder outputs of that batch."""
        if getattr(self, "_seen", None) is not None:
            self._restart_dead(*self._seen)
            self._seen = None

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """codes int64 (B, S/P, S/P) of pages x float (B, C, S, S) in [0, 1]."""
        return self.quantize(self.encode(x))[0]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) from codes (B, h, w)."""
        return self.decoder(self.codebook[codes].permute(0, 3, 1, 2))

    @torch.no_grad()
    def _initialise(self, z_e: torch.Tensor) -> None:
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1]).unique(dim=0)  # (N', D) distinct outputs
        pick = torch.randint(len(flat), (self.config.codes,), device=flat.device)  # (blank patches: one output)
        self.codebook.copy_(flat[pick])
        self.initialised.fill_(True)

    @torch.no_grad()
    def _restart_dead(self, z_e: torch.Tensor, counts: torch.Tensor) -> None:
        self.step += 1
        self.last_used[counts > 0] = self.step
        dead = (self.step - self.last_used) > self.RESTART_AFTER  # (K,)
        if dead.any() and not dead.all():
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # (N, D)
            live = self.codebook[~dead]  # (K_live, D)
            d2 = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ live.t() + live.pow(2).sum(1)).min(1).values  # (N,)
            d2 = d2.clamp_min(0) * (d2 > 1e-6 * live.pow(2).sum(1).mean())  # copies of a live code: never drawn
            n = min(int(dead.sum()), int((d2 > 0).sum()))
            if n:  # the rest stay dead and are retried next step
                pick = torch.multinomial(d2, n)  # (n,) distinct outputs, P ∝ squared distance (k-means++)
                slots = dead.nonzero()[:n, 0]
                self.codebook[slots] = flat[pick]
                self.last_used[slots] = self.step

    def describe(self) -> dict:
        """The config as a dict (what a checkpoint stores to rebuild the model)."""
        return asdict(self.config)
