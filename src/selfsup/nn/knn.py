"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018, InstDisc)."""

import torch
import torch.nn.functional as F


def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int = 200, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Labels (M,) for test features (M, D) by a vote of the k most cosine-similar train
    features (N, D), each weighted exp(s / temperature)."""
    train = F.normalize(train_features.float(), dim=1)
    num_classes = int(train_labels.max()) + 1
    k = min(k, train.shape[0])
    predictions = []
    for start in range(0, test_features.shape[0], chunk):
        test = F.normalize(test_features[start:start + chunk].float(), dim=1)  # (m, D)
        similarity, index = (test @ train.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(test.shape[0], num_classes, device=test.device)
        votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)
