"""Collapse monitors: the figures on known embeddings, and a run that collapses warns while a healthy one does not."""

import csv
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from selfsup.cli import main
from selfsup.methods import METHODS, register
from selfsup.train.monitor import collapse_figures, effective_rank, embedding_std
from tests.methods.test_contract import Align, AlignConfig


def test_std_and_effective_rank_of_known_embeddings():
    torch.manual_seed(0)
    spread = torch.randn(4096, 64)  # random directions: std of each normalised coordinate ~ 1/sqrt(D)
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert embedding_std(torch.ones(16, 64) + 1e-9 * torch.randn(16, 64)) < 1e-6
    # four orthogonal directions with equal energy: singular values equal -> exp(H) = 4 (Roy & Vetterli, Eq. 3)
    four = torch.cat([torch.eye(64)[:4], -torch.eye(64)[:4]])
    assert effective_rank(four) == pytest.approx(4.0, rel=1e-5)
    assert effective_rank(torch.ones(8, 16)) == 1.0  # no spread at all
    s = torch.tensor([3.0, 1.0])
    z = torch.diag(s).repeat(2, 1) * torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])  # centred, singular values ∝ s
    p = s / s.sum()
    assert effective_rank(F.pad(z, (0, 6))) == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)
    assert collapse_figures(spread)["std_x_sqrt_d"] == pytest.approx(1.0, rel=0.05)


@dataclass
class PullConfig(AlignConfig):
    lr: float = 0.5  # high enough to collapse within 60 steps


class Pull(Align):
    """Turns two views' backbone features towards each other with nothing against collapse: every input soon maps to
    one direction (in the backbone's features, which is what `embed` gives and the monitor sees)."""

    name = "toy-pull"
    config_class = PullConfig

    def training_step(self, views, indices=None):
        z1, z2 = (self.backbone(v) for v in views)
        return {"loss": -F.cosine_similarity(z1, z2).mean()}  # SimSiam without its stop-gradient and predictor


@pytest.fixture
def toy_methods():
    for cls in (Pull, Align):
        register(cls)
    yield
    for cls in (Pull, Align):
        METHODS.pop(cls.name)


def _train(name, tmp_path, capsys) -> tuple[str, list[dict]]:
    run = tmp_path / name
    assert main(["train", name, "--data", "digits", "--max-steps", "60", "--batch-size", "64", "--out", str(run),
                 "--num-workers", "0", "--no-progress", "--set", "monitor_every=20", "--recipe", "paper"]) == 0
    rows = [row for path in run.glob("logs/csv/*/metrics.csv") for row in csv.DictReader(path.open())
            if row.get("collapse/std")]
    return capsys.readouterr().err, rows


def test_a_collapsing_run_warns_once_and_a_healthy_one_does_not(toy_methods, tmp_path, capsys):
    err, rows = _train("toy-pull", tmp_path, capsys)
    assert [int(r["step"]) for r in rows] == [19, 39, 59]  # logged every monitor_every steps
    assert err.count("warning: toy-pull's embeddings look collapsed") == 1, err
    assert float(rows[-1]["collapse/effective_rank"]) < 2.0  # below RANK_FLOOR 4 with a margin
    err, rows = _train("toy-align", tmp_path, capsys)  # the same toy with a variance floor (test_contract.py)
    assert "collapsed" not in err and len(rows) == 3
    assert all(float(r["collapse/std_x_sqrt_d"]) > 0.1 and float(r["collapse/effective_rank"]) > 8 for r in rows)
