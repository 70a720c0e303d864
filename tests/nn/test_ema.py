import math

import torch
from torch import nn

from selfsup.nn import cosine_momentum, ema_update, frozen_copy


def test_frozen_copy_is_equal_and_gets_no_gradients():
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for a, b in zip(target.parameters(), online.parameters()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()


def test_ema_update_follows_the_equation_and_copies_buffers():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = frozen_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3))  # moves the running statistics
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for xi, old, theta in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta)
    torch.testing.assert_close(target[1].running_mean, online[1].running_mean)


def test_cosine_momentum_goes_from_base_to_one():
    assert cosine_momentum(0.996, 0, 100) == 0.996
    assert cosine_momentum(0.996, 100, 100) == 1.0
    assert math.isclose(cosine_momentum(0.996, 50, 100), 0.998)
    assert cosine_momentum(0.99, 500, 100) == 1.0  # a resumed run past its planned end stays at 1
