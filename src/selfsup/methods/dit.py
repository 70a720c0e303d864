"""DiT: Li, Xu, Lv, Cui, Zhang, Wei, "DiT: Self-supervised Pre-training for Document Image Transformer", ACM MM 2022.

BEiT's masked image modelling (Bao et al., ICLR 2022) on document pages (DiT sec. 3):
    x^M: the page's patch embeddings with those of the masked patches i ∈ M replaced by a learned e_[M]
         (M block-wise, BEiT Alg. 1, about 40 % of the patches: BEiT hides 75 of 196)
    h^L = Transformer(x^M),   p(z_i | x^M) = softmax(W h_i^L + b)
    L   = -(1/|M|) Σ_{i∈M} log p(z_i | x^M)                                      (BEiT eq. 1; losses/dit.py)
z_i is the page tokenizer's code of patch i: DiT retrained DALL-E's dVAE on documents; selfsup trains its own VQ-VAE
on pages (`selfsup train-tokenizer`, selfsup.document) and computes every page's codes once per tokenizer (cached).
`dit-pixel`, the named ablation: the same network and masks, the head regressing the per-patch normalised pixels of
the masked patches (MSE, as MAE's norm_pix_loss), no tokenizer.
The network is HF transformers' BeitForMaskedImageModeling built from a BeitConfig (no weights are read).
"""

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from selfsup.data.documents import PAGE, fit_page
from selfsup.data.images import ArrayImageSet
from selfsup.errors import SelfsupError
from selfsup.losses.dit import masked_token_loss
from selfsup.losses.reconstruction import normalize_patches
from selfsup.methods.base import ImageMethod, Method, MethodConfig
from selfsup.methods.registry import register
from selfsup.nn.vit import patchify
from selfsup.views.block_masking import block_masking
from selfsup.views.eval import EvalTransform, normalization_for

PAPER = "Li et al., DiT: Self-supervised Pre-training for Document Image Transformer, ACM MM 2022"
NETWORK = ("a BEiT of 4 layers, width 192, 3 heads, MLP 768 (1.8M parameters), sized for a CPU (paper: DiT-B, "
           "12 layers of 768, 12 heads, MLP 3072: --set layers=12 hidden=768 heads=12 intermediate=3072), on 224 px "
           "grayscale pages with 16 px patches, 1 input channel (paper: the pages as RGB); no random resized crop "
           "or flip (paper: BEiT's crops): dit's codes are cached per whole page, and dit-pixel keeps dit's views so "
           "that only the target differs; block masking hides "
           "exactly round(0.4 x 196) = 78 patches per page, blocks then single patches (BEiT: at most 75, blocks "
           "only); no drop path (paper 0.1) and no gradient clipping (3.0); run default batch 32 (paper 2048); "
           "frozen features are the mean of the final patch states")
TOKEN_DEVIATIONS = ("targets are the ids of selfsup's own VQ-VAE page tokenizer, 512 codes by default, each code a "
                    "function of its own patch's pixels (paper: DALL-E's dVAE retrained on IIT-CDIP, 8,192 codes, "
                    "its encoder seeing the whole page); ")


@dataclass
class PageMIMConfig(MethodConfig):
    """What dit and dit-pixel share. BEiT's pre-training recipe, which DiT follows: block-wise masking of ~40 % of the
    patches (blocks of >= 16 of 196 patches, mask_min_block as a share of the grid, aspect 0.3 - 1/0.3); layer scale
    0.1; AdamW lr 1.5e-3 at batch 2048 (1.875e-4 x B/256), β (0.9, 0.999), wd 0.05, warm-up 10 of 800 epochs."""

    hidden: int = 192
    layers: int = 4
    heads: int = 3
    intermediate: int = 768
    layer_scale: float = 0.1  # BEiT's LayerScale init; 0: none
    drop_path: float = 0.0
    mask_ratio: float = 0.4
    mask_min_block: float = 0.0816  # 16 / 196 of the patches (BEiT's 16 on a 14 x 14 grid)
    mask_min_aspect: float = 0.3
    pooling: str = "mean"  # frozen features / fine-tuning: mean of the final patch states, or "cls"
    optimizer: str = "adamw"
    lr: float = 1.875e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_fraction: float = 0.0125


@dataclass
class DiTConfig(PageMIMConfig):
    """tokenizer: the checkpoint of `selfsup train-tokenizer` (its default --out); its codes are the targets, its
    patch and page size fix the network's."""

    tokenizer: str = "runs/tokenizer/tokenizer.ckpt"


@dataclass
class DiTPixelConfig(PageMIMConfig):
    """patch: the ViT's patch side in px (dit takes its tokenizer's)."""

    patch: int = 16


POOLINGS = ("mean", "cls")


@register
class DiT(ImageMethod):
    """BEiT masked image modelling on grayscale pages: block-mask ~40 % of the patches, predict each masked patch's
    visual-token id (the cached codes of the page tokenizer) with cross-entropy. Batches from `default_views`:
    [x (B, 1, S, S), mask (B, N) bool, codes (B, N) int64]."""

    name = "dit"
    paper = PAPER
    deviations = TOKEN_DEVIATIONS + NETWORK
    config_class = DiTConfig
    run_defaults: ClassVar[dict[str, Any]] = {"data": "doc-pages", "batch_size": 32}
    target: ClassVar[str] = "tokens"  # or "pixels" (dit-pixel)

    def __init__(self, config: PageMIMConfig, data_meta: dict[str, Any]):
        Method.__init__(self, config, data_meta)  # not ImageMethod's: the network is HF's BEiT, not a timm backbone
        from transformers import BeitConfig, BeitForMaskedImageModeling

        self._check(config)
        size, tokenizer = data_meta["image_size"], data_meta.get("page_tokenizer")
        self.patch = tokenizer["patch"] if tokenizer else config.patch
        if size % self.patch:
            raise SelfsupError(f"{self.name}: {size} px pages do not split into {self.patch} px patches; pass "
                               f"--image-size {self.patch * max(1, round(size / self.patch))}")
        self.grid = (size // self.patch, size // self.patch)
        outputs = tokenizer["codes"] if tokenizer else self.patch * self.patch  # K token ids, or p·p grey pixels
        beit = BeitConfig(vocab_size=outputs, hidden_size=config.hidden, num_hidden_layers=config.layers,
                          num_attention_heads=config.heads, intermediate_size=config.intermediate,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, image_size=size,
                          patch_size=self.patch, num_channels=1, use_mask_token=True,
                          use_absolute_position_embeddings=False, use_shared_relative_position_bias=True,
                          layer_scale_init_value=config.layer_scale, drop_path_rate=config.drop_path,
                          use_mean_pooling=False)
        self.model = BeitForMaskedImageModeling(beit)  # beit (BeitModel) + layernorm + lm_head (W, b)
        self.backbone = self.model.beit  # what evaluation, fine-tuning and export keep

    def _check(self, c: PageMIMConfig) -> None:
        if c.hidden % c.heads:
            raise SelfsupError(f"{self.name}: hidden {c.hidden} is not a multiple of heads {c.heads}; pass e.g. "
                               f"heads={max(1, c.hidden // 64)}")
        if not 0 < c.mask_min_block <= 1 or not 0 < c.mask_min_aspect <= 1 or not c.drop_path < 1:
            raise SelfsupError(f"{self.name}: mask_min_block {c.mask_min_block} and mask_min_aspect "
                               f"{c.mask_min_aspect} must lie in (0, 1], drop_path {c.drop_path} in [0, 1) "
                               "(paper: 16/196, 0.3, 0.1)")
        if c.pooling not in POOLINGS:
            raise SelfsupError(f"{self.name}: unknown pooling '{c.pooling}'; pass {' or '.join(POOLINGS)}")

    @classmethod
    def build(cls, config: PageMIMConfig, data_meta: dict[str, Any]) -> "DiT":
        """Pages are grayscale: in_chans is 1 whatever the data's channel count (page images are read as grey pages,
        see `training_images`). dit records its tokenizer's facts in data_meta["page_tokenizer"], so a checkpoint
        rebuilds without the tokenizer file (evaluation, export); image_size defaults to the tokenizer's page."""
        meta = {**data_meta, "in_chans": 1}
        if cls.target == "tokens" and "page_tokenizer" not in meta:
            meta["page_tokenizer"] = describe_tokenizer(config.tokenizer, cls.name)
        tokenizer = meta.get("page_tokenizer")
        meta.setdefault("image_size", tokenizer["image_size"] if tokenizer else PAGE)
        return cls(config, meta)

    def default_views(self, image_size: int, channels: int) -> "PageViews":
        tokenizer = self.data_meta.get("page_tokenizer")
        if tokenizer and image_size != tokenizer["image_size"]:
            raise SelfsupError(f"{self.name}: its tokenizer coded {tokenizer['image_size']} px pages and the data is "
                               f"opened at {image_size} px; pass --image-size {tokenizer['image_size']}")
        c = self.config
        min_block = max(1, round(c.mask_min_block * self.grid[0] * self.grid[1]))
        return PageViews(image_size, self.grid, c.mask_ratio, min_block, c.mask_min_aspect)

    def training_images(self, images: Dataset) -> "PagesWithCodes":
        """The training images as grayscale pages of the network's size, each with its tokenizer codes (dit),
        computed once per tokenizer and cached (selfsup.document.page_codes)."""
        pages = page_tensor(images, self.image_size, self.name)  # (N, 1, S, S) uint8
        codes = None
        if self.target == "tokens":
            from selfsup.document import page_codes

            tokenizer = self.data_meta["page_tokenizer"]
            codes = page_codes(tokenizer["path"], ArrayImageSet(pages, name="pages"))  # (N, h, w)
            if codes.shape[1:] != self.grid:
                raise SelfsupError(f"{self.name}: the tokenizer gives {tuple(codes.shape[1:])} codes per page, the "
                                   f"network has {self.grid} patches; retrain the run with this tokenizer")
        return PagesWithCodes(pages, codes)

    def predict_masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, 1, S, S), mask (B, N) bool -> (M, K) token logits or (M, p·p) pixels of the M masked patches,
        in the row-major order of mask's True entries; the [MASK] embedding stands in for them."""
        h = self.backbone(x, bool_masked_pos=mask).last_hidden_state[:, 1:]  # (B, N, D): h^L, [CLS] dropped
        return self.model.lm_head(self.model.layernorm(h[mask]))  # (M, K): W h_i^L + b, masked i only

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x, mask, codes = views  # (B, 1, S, S), (B, N) bool, (B, N) int64 z
        logits = self.predict_masked(x, mask)  # (M, K)
        loss = masked_token_loss(logits, codes, mask)
        with torch.no_grad():
            accuracy = (logits.argmax(1) == codes[mask]).float().mean()
        return {"loss": loss, "accuracy": accuracy}

    def embed(self, images: "torch.Tensor | MonitorPages") -> torch.Tensor:
        """(B, 1, S, S) -> (B, D): the mean of the final patch states (or [CLS]'s, pooling=cls). For the collapse
        monitor's MonitorPages (`monitor_batch`): those features minus the same of a blank (white) page."""
        if isinstance(images, MonitorPages):
            pages = images.pages  # (B, 1, S, S)
            mean, std = normalization_for(pages.shape[1])
            white = torch.tensor([(1 - m) / s for m, s in zip(mean, std)], dtype=pages.dtype, device=pages.device)
            blank = white.view(1, -1, 1, 1).expand_as(pages[:1])  # (1, 1, S, S): a page of 255s, normalised
            z = self.finetune_encoder()(torch.cat([pages, blank]))  # (B + 1, D)
            return z[:-1] - z[-1:]  # (B, D)
        return self.finetune_encoder()(images)

    def monitor_batch(self, batch: list[torch.Tensor]) -> "MonitorPages":
        """A training batch [x, mask, ...] -> MonitorPages(x): the monitor (train/monitor.py) sees each page's
        features minus those of a blank page. Most of a page is white margin, whose patch states are the same on
        every page, so the pooled states of all pages share one large component: std·√D of their normalised features
        is ~0.03 (floor 0.1) on doc-pages for a trained network and for a random init alike, a false "collapsed"
        at every run's first figure. The blank page's features are a constant of the network, so the difference
        keeps what the page adds, and a network whose states no longer depend on the page still gives 0 for all
        pages: collapsed. Probes keep `embed` of plain pages (the exported encoder's mean-pooled states)."""
        return MonitorPages(super().monitor_batch(batch))

    def finetune_encoder(self) -> nn.Module:
        return PooledBeit(self.backbone, self.config.pooling)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, D, S/p, S/p): the final patch states on their grid."""
        h = self.backbone(images).last_hidden_state[:, 1:]  # (B, N, D)
        return h.transpose(1, 2).reshape(h.shape[0], h.shape[2], *self.grid)

    def network_name(self) -> str:
        c = self.config
        return f"beit-{c.layers}x{c.hidden}-p{self.patch}"


@register
class DiTPixel(DiT):
    """The ablation of DiT's target: the same BEiT, pages and block masks, the head predicting the masked patches'
    per-patch normalised pixels with MSE (no tokenizer). Batches: [x (B, 1, S, S), mask (B, N) bool]."""

    name = "dit-pixel"
    paper = PAPER
    deviations = ("the named ablation of DiT's target (not in the paper): per-patch normalised pixels of the masked "
                  "patches, MSE; " + NETWORK)
    config_class = DiTPixelConfig
    target: ClassVar[str] = "pixels"

    def training_step(self, views: list[torch.Tensor], indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x, mask = views  # (B, 1, S, S), (B, N) bool
        pred = self.predict_masked(x, mask)  # (M, p·p)
        target = normalize_patches(patchify(x, self.patch))[mask]  # (M, p·p): each patch minus its mean, / its std
        return {"loss": F.mse_loss(pred, target)}


class MonitorPages(NamedTuple):
    """Pages (B, 1, S, S) that `DiT.embed` embeds relative to a blank page: what `DiT.monitor_batch` gives the
    collapse monitor."""

    pages: torch.Tensor


class PooledBeit(nn.Module):
    """A BeitModel's pages (B, 1, S, S) -> (B, D): the mean of its final patch states (pooling 'mean') or the
    [CLS] state ('cls'). Holds the model itself, not a copy."""

    def __init__(self, beit: nn.Module, pooling: str = "mean"):
        super().__init__()
        self.beit, self.pooling = beit, pooling

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.beit(images).last_hidden_state  # (B, 1 + N, D)
        return h[:, 1:].mean(1) if self.pooling == "mean" else h[:, 0]


class PageViews:
    """(page uint8 (1, S, S), codes (h, w) int64) -> [x (1, S, S) float, mask (h·w,) bool, codes (h·w,)], or a page
    alone -> [x, mask]. x is the page normalised as evaluation does (views.EvalTransform), no crop or flip; mask is
    BEiT's block-wise mask (views.block_masking) drawn from torch's generator, which the loader seeds per (seed,
    epoch, page): the same masks after a resume. Made per sample in the loader (batch = None)."""

    batch = None

    def __init__(self, image_size: int, grid: tuple[int, int], ratio: float, min_block: int, min_aspect: float):
        self.transform = EvalTransform(image_size, 1)
        self.grid, self.ratio, self.min_block, self.min_aspect = grid, ratio, min_block, min_aspect

    def __call__(self, sample: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        page, codes = sample if isinstance(sample, tuple) else (sample, None)
        x = self.transform(page)  # (1, S, S)
        mask = block_masking(1, self.grid, self.ratio, self.min_block, self.min_aspect)[0].bool()  # (N,)
        return [x, mask] if codes is None else [x, mask, codes.flatten()]


class PagesWithCodes(Dataset):
    """pages uint8 (N, 1, S, S), codes int64 (N, h, w) or None -> items ((page, codes[i]) or page, -1)."""

    def __init__(self, pages: torch.Tensor, codes: torch.Tensor | None):
        self.pages, self.codes = pages, codes

    def __len__(self) -> int:
        return len(self.pages)

    def __getitem__(self, i: int):
        return ((self.pages[i], self.codes[i]) if self.codes is not None else self.pages[i]), -1


def page_tensor(images: Dataset, size: int, name: str) -> torch.Tensor:
    """uint8 (N, 1, size, size) of a data set's (image, label) items: grey pages of that size as they are (the
    built-in page sets, a folder of PDFs), other images (page scans of any size and channel count) fitted as
    `selfsup.data.documents` fits page images: grey, longer side PAGE px, centred on white. A SelfsupError for
    images that are neither, at a size other than PAGE."""
    if isinstance(images, ArrayImageSet) and tuple(images.images.shape[1:]) == (1, size, size):
        return images.images
    pages = []
    for i in tqdm(range(len(images)), desc="reading pages", unit="page", disable=None if len(images) >= 200 else True):
        image = images[i][0]  # uint8 (C, H, W)
        if tuple(image.shape) != (1, size, size):
            if size != PAGE:
                raise SelfsupError(f"{name} trains on {size} px grey pages and an image is {tuple(image.shape)} "
                                   f"(C, H, W); pass pages of that size, or --image-size {PAGE} to fit them")
            from PIL import Image

            array = image.permute(1, 2, 0).numpy()  # (H, W, C)
            image = torch.from_numpy(fit_page(Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)).copy())[None]
        pages.append(image)
    return torch.stack(pages)


def describe_tokenizer(path: str, name: str) -> dict[str, Any]:
    """{path, sha256, codes, patch, image_size} of the tokenizer checkpoint `path`, for data_meta. A SelfsupError
    naming `selfsup train-tokenizer` when the file is missing or not a grey page tokenizer."""
    from pathlib import Path

    from selfsup.document import load_tokenizer
    from selfsup.document.train import file_hash

    if Path(path).expanduser().is_dir():
        raise SelfsupError(f"{name}: '{path}' is a folder; pass the tokenizer checkpoint in it, --set "
                           f"tokenizer={Path(path) / 'tokenizer.ckpt'}")
    if not Path(path).expanduser().is_file():
        raise SelfsupError(f"{name} predicts the codes of a page tokenizer and '{path}' does not exist: train one with "
                           "`selfsup train-tokenizer --data doc-pages --out DIR` and pass --set "
                           "tokenizer=DIR/tokenizer.ckpt (dit-pixel needs no tokenizer)")
    config = load_tokenizer(path).config
    if config.channels != 1:
        raise SelfsupError(f"{name}: '{path}' codes {config.channels}-channel images; pass a tokenizer trained on "
                           "grey pages (`selfsup train-tokenizer --data doc-pages`)")
    return {"path": str(Path(path).expanduser().resolve()), "sha256": file_hash(Path(path).expanduser()),
            "codes": config.codes, "patch": config.patch, "image_size": config.image_size}
