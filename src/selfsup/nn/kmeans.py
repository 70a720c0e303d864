"""Batched k-means on the device: many small point sets (e.g. each image's superpixel features) clustered at once."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def batched_kmeans(x: torch.Tensor, valid: torch.Tensor, k: int, iterations: int = 10) -> torch.Tensor:
    """Lloyd's algorithm on B point sets at once. x (B, P, D) points, valid (B, P) bool (padding is False), k
    clusters -> assignments (B, P) int64 in 0..k-1 (those of invalid points mean nothing).

    Centroids start at k valid points drawn at random (torch's global generator, so a seeded run repeats); a
    cluster that empties keeps its centroid. A set with fewer than k valid points gives each its own cluster.
    """
    B, P, D = x.shape
    k = min(k, P)
    scores = torch.rand(B, P, device=x.device) + 2.0 * ~valid  # (B, P): invalid points sort last
    centroids = x.gather(1, scores.argsort(dim=1)[:, :k, None].expand(-1, -1, D))  # (B, k, D)
    for _ in range(iterations):
        assignments = torch.cdist(x, centroids).argmin(dim=2)  # (B, P)
        members = F.one_hot(assignments, k).to(x.dtype) * valid[..., None]  # (B, P, k)
        counts = members.sum(dim=1)[..., None]  # (B, k, 1)
        means = members.transpose(1, 2) @ x / counts.clamp_min(1)  # (B, k, D)
        centroids = torch.where(counts > 0, means, centroids)
    return torch.cdist(x, centroids).argmin(dim=2)
