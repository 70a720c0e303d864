"""DETR's Hungarian set loss (Carion et al., ECCV 2020, eqs. 1-2) with UP-DETR's feature reconstruction (Dai et al.,
CVPR 2021, eq. 2): one optimal matching of predictions to targets, then classification, L1 and GIoU box losses on
the matched pairs, plus ||f/||f|| - p/||p||||^2 between a matched prediction's feature and its query patch's."""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, N) cost -> (rows, cols) int64 (min(Q, N),): the assignment of minimal total cost (scipy's
    linear_sum_assignment), rows ascending; DETR's σ̂ = argmin_σ Σ_i L_match(y_i, ŷ_σ(i))."""
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)


def xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) normalised (cx, cy, w, h) -> (..., 4) (x0, y0, x1, y1)."""
    return box_convert(boxes, "cxcywh", "xyxy")


class DETRLoss(nn.Module):
    """DETR's loss for K classes (the last logit, index K, is "no object" ∅), and UP-DETR's with K = 1 and features.

    forward(logits (B, Q, K + 1), boxes (B, Q, 4) normalised cxcywh, target_boxes [(N_b, 4) cxcywh], target_labels
    [(N_b,) int64 in 0..K-1], features (B, Q, D) and target_features [(N_b, D)] or None) -> {"loss", "class", "l1",
    "giou", "rec"} scalars. Matching cost per pair: -w_class·p̂(c_i) + w_l1·||b - b̂||_1 + w_giou·(-GIoU(b, b̂)).
    Losses: cross-entropy over all Q queries (∅ for the unmatched, its weight `eos_coef`), and over the matched pairs
    L1, 1 - GIoU and the reconstruction, each summed and divided by the number of targets in the batch.
    Defaults are DETR's (1, 5, 2, ∅ weight 0.1) and UP-DETR's reconstruction weight 1.
    """

    def __init__(self, num_classes: int = 1, w_class: float = 1.0, w_l1: float = 5.0, w_giou: float = 2.0,
                 w_rec: float = 1.0, eos_coef: float = 0.1):
        super().__init__()
        self.num_classes, self.w_class, self.w_l1, self.w_giou, self.w_rec = num_classes, w_class, w_l1, w_giou, w_rec
        self.register_buffer("class_weight", torch.cat([torch.ones(num_classes), torch.tensor([eos_coef])]))

    @torch.no_grad()
    def match(self, logits: torch.Tensor, boxes: torch.Tensor, target_boxes: torch.Tensor,
              target_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image: (Q, K + 1), (Q, 4), (N, 4), (N,) -> (query ids, target ids) of the optimal matching."""
        prob = logits.softmax(-1)[:, target_labels]  # (Q, N) p̂_σ(i)(c_i)
        l1 = torch.cdist(boxes, target_boxes, p=1)  # (Q, N)
        giou = generalized_box_iou(xyxy(boxes), xyxy(target_boxes))  # (Q, N)
        return hungarian_match(-self.w_class * prob + self.w_l1 * l1 - self.w_giou * giou)

    def forward(self, logits: torch.Tensor, boxes: torch.Tensor, target_boxes: list[torch.Tensor],
                target_labels: list[torch.Tensor], features: torch.Tensor | None = None,
                target_features: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        B, Q, _ = logits.shape
        classes = torch.full((B, Q), self.num_classes, dtype=torch.int64, device=logits.device)  # ∅ everywhere
        l1 = giou = rec = logits.new_zeros(())
        for b in range(B):
            if len(target_boxes[b]) == 0:
                continue
            i, j = (ids.to(logits.device) for ids in self.match(logits[b], boxes[b], target_boxes[b], target_labels[b]))
            classes[b, i] = target_labels[b][j]
            l1 = l1 + (boxes[b, i] - target_boxes[b][j]).abs().sum()
            giou = giou + (1 - generalized_box_iou(xyxy(boxes[b, i]), xyxy(target_boxes[b][j])).diagonal()).sum()
            if features is not None:  # UP-DETR eq. 2: normalised features, squared L2 distance
                f, p = F.normalize(features[b, i], dim=-1), F.normalize(target_features[b][j], dim=-1)  # (n, D)
                rec = rec + (f - p).pow(2).sum()
        n = max(sum(len(t) for t in target_boxes), 1)  # targets in the batch
        ce = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), self.class_weight)  # weighted mean
        l1, giou, rec = l1 / n, giou / n, rec / n
        loss = self.w_class * ce + self.w_l1 * l1 + self.w_giou * giou + self.w_rec * rec
        return {"loss": loss, "class": ce.detach(), "l1": l1.detach(), "giou": giou.detach(), "rec": rec.detach()}
