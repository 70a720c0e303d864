"""DETR (Carion et al., End-to-End Object Detection with Transformers, ECCV 2020) on any selfsup backbone: what
UP-DETR pretrains (methods/updetr.py) and `eval detect --detector detr` fine-tunes."""

import torch
from torch import nn
from torchvision.ops import MLP

from selfsup.nn.backbones import feature_map


def sine_positions(h: int, w: int, d: int, device: torch.device | None = None) -> torch.Tensor:
    """DETR's 2-D sine position encoding, (h*w, d): d/2 channels for y, d/2 for x, normalised to [0, 2π], T 10000."""
    y = (torch.arange(h, device=device, dtype=torch.float32) + 1) / h * 2 * torch.pi  # (h,)
    x = (torch.arange(w, device=device, dtype=torch.float32) + 1) / w * 2 * torch.pi  # (w,)
    freq = 10000 ** (2 * torch.arange(d // 4, device=device) / (d // 2))  # (d/4,)
    ey = torch.cat([(y[:, None] / freq).sin(), (y[:, None] / freq).cos()], 1)  # (h, d/2)
    ex = torch.cat([(x[:, None] / freq).sin(), (x[:, None] / freq).cos()], 1)  # (w, d/2)
    return torch.cat([ey[:, None].expand(h, w, -1), ex[None].expand(h, w, -1)], -1).reshape(h * w, d)


class DETR(nn.Module):
    """DETR without its class head: CNN -> 1x1 projection + sine positions -> transformer encoder/decoder over
    `num_queries` learned object queries -> (hidden (B, Q, d), boxes (B, Q, 4) normalised cxcywh via a 3-layer MLP).

    torch.nn.Transformer (post-norm, as DETR) with the positions added once at the encoder's input and the object
    queries as the decoder's input (DETR adds both at every layer). `queries` (B, Q, d) are added to the object
    queries (UP-DETR: the query patches' features); `query_mask` (Q, Q) bool blocks decoder self-attention.
    `num_features` is d, the width of `hidden`.
    """

    def __init__(self, backbone: nn.Module, d_model: int = 128, heads: int = 4, encoder_layers: int = 2,
                 decoder_layers: int = 2, ffn_dim: int = 512, dropout: float = 0.1, num_queries: int = 100):
        super().__init__()
        self.backbone = backbone
        self.input_proj = nn.Conv2d(backbone.num_features, d_model, 1)
        self.transformer = nn.Transformer(d_model, heads, encoder_layers, decoder_layers, ffn_dim, dropout,
                                          batch_first=True)
        self.query_embed = nn.Embedding(num_queries, d_model)  # DETR's object queries
        self.box_head = MLP(d_model, [d_model, d_model, 4])
        self.num_features = d_model
        # what rebuilds it around a backbone (an export's sidecar keeps it: checkpoints.load_exported)
        self.hparams = {"d_model": d_model, "heads": heads, "encoder_layers": encoder_layers,
                        "decoder_layers": decoder_layers, "ffn_dim": ffn_dim, "dropout": dropout,
                        "num_queries": num_queries}

    def forward(self, images: torch.Tensor, queries: torch.Tensor | None = None,
                query_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.input_proj(feature_map(self.backbone, images))  # (B, d, h, w)
        B, d, h, w = f.shape
        src = f.flatten(2).transpose(1, 2) + sine_positions(h, w, d, f.device)  # (B, hw, d)
        tgt = self.query_embed.weight.expand(B, -1, -1)  # (B, Q, d)
        tgt = tgt + queries if queries is not None else tgt
        hidden = self.transformer(src, tgt, tgt_mask=query_mask)  # (B, Q, d)
        return hidden, self.box_head(hidden).sigmoid()
