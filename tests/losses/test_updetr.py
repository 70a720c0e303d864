import itertools

import pytest
import torch

from selfsup.losses.updetr import DETRLoss, hungarian_match


def brute_force(cost):
    """(Q, N) with Q >= N -> (total, {target: query}) of the cheapest injective assignment, by trying them all."""
    Q, N = cost.shape
    best = min(itertools.permutations(range(Q), N), key=lambda qs: sum(cost[q, n].item() for n, q in enumerate(qs)))
    return sum(cost[q, n].item() for n, q in enumerate(best)), {n: q for n, q in enumerate(best)}


@pytest.mark.parametrize("Q, N, seed", [(3, 3, 0), (5, 2, 1), (6, 4, 2), (7, 3, 3), (4, 1, 4)])
def test_hungarian_matching_equals_a_brute_force_search(Q, N, seed):
    cost = torch.rand(Q, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows, cols = hungarian_match(cost)
    total, assignment = brute_force(cost)
    assert len(rows) == N and len(set(rows.tolist())) == N
    assert abs(cost[rows, cols].sum().item() - total) < 1e-12
    assert {n: q for q, n in zip(rows.tolist(), cols.tolist())} == assignment  # unique for random costs


def giou_by_hand(a, b):
    """Generalised IoU of two cxcywh boxes (Rezatofighi et al. 2019), written out."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0) * \
            (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp(min=0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (torch.maximum(ax1, bx1) - torch.minimum(ax0, bx0)) * (torch.maximum(ay1, by1) - torch.minimum(ay0, by0))
    return inter / union - (hull - union) / hull


def naive_loss(logits, boxes, target_boxes, target_labels, features, target_features, w=(1.0, 5.0, 2.0, 1.0),
               eos=0.1):
    """DETR's Hungarian loss + UP-DETR's reconstruction with loops: brute-force matching on the per-pair cost, then
    the weighted cross-entropy over every query and the matched pairs' L1, 1 - GIoU and ||f/|f| - p/|p|||^2."""
    B, Q, C = logits.shape
    K = C - 1
    ce_num, ce_den, l1, giou, rec, n = 0, 0, 0, 0, 0, 0
    for b in range(B):
        N = len(target_boxes[b])
        p = logits[b].softmax(-1)
        cost = torch.zeros(Q, N, dtype=torch.float64)
        for q in range(Q):
            for t in range(N):
                cost[q, t] = (-w[0] * p[q, target_labels[b][t]] + w[1] * (boxes[b, q] - target_boxes[b][t]).abs().sum()
                              - w[2] * giou_by_hand(boxes[b, q], target_boxes[b][t])).detach()
        assignment = brute_force(cost)[1] if N else {}
        matched = {q: t for t, q in assignment.items()}
        for q in range(Q):
            c = target_labels[b][matched[q]] if q in matched else K
            weight = eos if c == K else 1.0
            ce_num = ce_num - weight * torch.log_softmax(logits[b, q], -1)[c]
            ce_den = ce_den + weight
        for q, t in matched.items():
            l1 = l1 + (boxes[b, q] - target_boxes[b][t]).abs().sum()
            giou = giou + 1 - giou_by_hand(boxes[b, q], target_boxes[b][t])
            if features is not None:
                f, g = features[b, q], target_features[b][t]
                rec = rec + ((f / f.norm() - g / g.norm()) ** 2).sum()
        n += N
    return w[0] * ce_num / ce_den + (w[1] * l1 + w[2] * giou + w[3] * rec) / n


def _inputs(B=2, Q=6, K=1, D=5, counts=(3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, Q, K + 1, generator=g, dtype=torch.float64, requires_grad=True)
    centres = 0.3 + 0.4 * torch.rand(B, Q, 2, generator=g, dtype=torch.float64)
    sizes = 0.1 + 0.4 * torch.rand(B, Q, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([centres, sizes], -1).requires_grad_(True)
    features = torch.randn(B, Q, D, generator=g, dtype=torch.float64, requires_grad=True)
    target_boxes = [torch.cat([0.3 + 0.4 * torch.rand(n, 2, generator=g, dtype=torch.float64),
                               0.1 + 0.4 * torch.rand(n, 2, generator=g, dtype=torch.float64)], -1) for n in counts]
    target_labels = [torch.randint(K, (n,), generator=g) for n in counts]
    target_features = [torch.randn(n, D, generator=g, dtype=torch.float64) for n in counts]
    return logits, boxes, features, target_boxes, target_labels, target_features


@pytest.mark.parametrize("K, counts, with_features", [(1, (3, 2), True), (3, (4, 0), False), (2, (1, 6), True)])
def test_loss_equals_a_float64_reference_values_and_gradients(K, counts, with_features):
    logits, boxes, features, target_boxes, target_labels, target_features = _inputs(K=K, counts=counts)
    if not with_features:
        features = target_features = None
    ours = DETRLoss(K).double()(logits, boxes, target_boxes, target_labels, features, target_features)
    reference = naive_loss(logits, boxes, target_boxes, target_labels, features, target_features)
    torch.testing.assert_close(ours["loss"], reference)
    leaves = [logits, boxes] + ([features] if with_features else [])
    for g, r in zip(torch.autograd.grad(ours["loss"], leaves), torch.autograd.grad(reference, leaves)):
        torch.testing.assert_close(g, r)


def test_perfect_predictions_leave_only_the_no_object_cross_entropy():
    target = torch.tensor([[0.5, 0.5, 0.2, 0.3]])
    boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.2, 0.3]]])  # query 1 is exact
    logits = torch.tensor([[[-20.0, 20.0], [20.0, -20.0]]])  # query 0 says ∅, query 1 says "patch"
    features = torch.tensor([[[1.0, 0.0], [2.0, 2.0]]])
    out = DETRLoss(1)(logits, boxes, [target], [torch.tensor([0])], features, [torch.tensor([[1.0, 1.0]])])
    assert out["loss"].item() < 1e-6 and out["l1"] == out["giou"] == out["rec"] == 0
