import math

import pytest
import torch
from timm.optim import Lars
from torch import nn

from selfsup.errors import SelfsupError
from selfsup.train.optim import create_optimizer, parameter_groups, warmup_cosine


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias


def test_optimizer_choice():
    model = nn.Linear(3, 2)
    assert isinstance(create_optimizer(model, "lars", 0.1, 1e-6, 0.9), Lars)
    assert isinstance(create_optimizer(model, "adamw", 0.1, 1e-6, 0.9), torch.optim.AdamW)
    with pytest.raises(SelfsupError, match="unknown optimizer 'adam'"):
        create_optimizer(model, "adam", 0.1, 0.0, 0.9)


def test_warmup_then_cosine():
    schedule = warmup_cosine(warmup=4, total=14)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0
    assert math.isclose(schedule(9), 0.5)  # halfway through the 10 cosine steps
    assert math.isclose(schedule(14), 0.0, abs_tol=1e-12)
    assert schedule(100) == schedule(14)
