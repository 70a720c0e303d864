import math

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.eval import knn_predict, linear_probe


def naive_knn(train, labels, test, k, t):
    out = []
    for q in test:
        sims = [float(F.cosine_similarity(q, x, dim=0)) for x in train]
        nearest = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in nearest:
            votes[int(labels[i])] = votes.get(int(labels[i]), 0.0) + math.exp(sims[i] / t)
        out.append(max(votes, key=votes.get))
    return torch.tensor(out)


def test_weighted_knn_matches_a_naive_vote():
    torch.manual_seed(0)
    train, labels, test = torch.randn(60, 5), torch.randint(0, 4, (60,)), torch.randn(25, 5)
    for k, t in ((1, 0.07), (7, 0.07), (20, 1.0)):
        assert torch.equal(knn_predict(train, labels, test, k=k, temperature=t, chunk=8),
                           naive_knn(train, labels, test, k, t))


def test_weights_let_close_neighbours_outvote_many_far_ones():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(train, labels, query, k=4, temperature=0.07).item() == 0
    assert knn_predict(train, labels, query, k=4, temperature=100.0).item() == 1


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 5
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 10))
    predicted = linear_probe(x[:200], y[:200], x[200:])
    assert (predicted == y[200:]).mean() > 0.95
