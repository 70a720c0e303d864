import pytest
import torch
import torch.nn.functional as F

from selfsup.checkpoints import read_checkpoint
from selfsup.cli import main
from selfsup.losses.nce import NCELoss
from selfsup.methods import METHODS, create, make_config
from selfsup.methods.instdisc import bank_knn_predict
from selfsup.views import SimCLRViews
from tests.distributed import run_distributed
from tests.learning import knn_before_and_after
from tests.methods.test_barlow_twins import NARROW, TINY, state_at_resume, write_images

SMALL = {"backbone": "resnet10t", "backbone_kwargs": NARROW, "feature_dim": 16, "temperature": 0.1}


def _method(n=20, **options):
    torch.manual_seed(0)
    method = create("instdisc", in_chans=1, **{**SMALL, **options})
    method.prepare(n, 1)
    return method


def test_registry_has_the_paper_defaults():
    assert "instdisc" in METHODS
    config = make_config("instdisc")
    assert (config.optimizer, config.lr, config.momentum, config.weight_decay) == ("sgd", 0.03, 0.9, 5e-4)
    assert (config.feature_dim, config.temperature, config.nce_k, config.ema_bank) == (128, 0.07, 4096, 0.5)
    views = create("instdisc", in_chans=1, backbone="resnet10t").default_views(28, 1)
    assert isinstance(views, SimCLRViews) and views.n_views == 1


def test_prepare_builds_the_bank_and_caps_K():
    method = _method(n=20, nce_k=4096)
    assert method.memory.bank.shape == (20, 16) and method.K == 19 and method.Z.item() == 0
    assert _method(n=5000, nce_k=64).K == 64


def test_training_step_is_nce_against_the_bank_and_Z_is_fixed_after_the_first_batch():
    method = _method(n=20, nce_k=6)
    x, indices = torch.randn(4, 1, 16, 16), torch.tensor([3, 0, 11, 19])
    torch.manual_seed(5)
    loss = method.training_step([x], indices)["loss"]
    torch.manual_seed(5)
    noise = torch.randint(0, 20, (6,))  # the same draw of K uniform rows
    f = F.normalize(method.head(method.backbone(x)), dim=1)
    positive, negatives = (f * method.memory.bank[indices]).sum(1), f @ method.memory.bank[noise].T
    Z = (negatives / 0.1).exp().mean() * 20  # n · mean exp(vᵀf/τ) over the first batch
    torch.testing.assert_close(method.Z, Z.detach())
    torch.testing.assert_close(loss, NCELoss(0.1)(positive, negatives, Z, 20))
    loss.backward()
    assert all(p.grad is not None for p in method.backbone.parameters())
    method.after_step(1, 10)
    method.training_step([torch.randn(4, 1, 16, 16) * 3], torch.tensor([1, 2, 5, 6]))
    torch.testing.assert_close(method.Z, Z.detach())  # a second batch leaves Z as it was


def test_after_step_moves_the_batch_rows_towards_their_features():
    method = _method(n=20, nce_k=6)
    before = method.memory.bank.clone()
    x, indices = torch.randn(4, 1, 16, 16), torch.tensor([3, 0, 11, 19])
    method.training_step([x], indices)
    torch.testing.assert_close(method.memory.bank, before)  # nothing changes before the optimiser step
    f = method.features(x).detach()
    method.after_step(1, 10)
    torch.testing.assert_close(method.memory.bank[indices], F.normalize(0.5 * before[indices] + 0.5 * f, dim=1))
    others = [i for i in range(20) if i not in indices.tolist()]
    torch.testing.assert_close(method.memory.bank[others], before[others])


def _distributed_step(rank, world):
    method = _method(n=16, nce_k=4)  # the same seed: identical networks and banks, as DDP starts them
    before = method.memory.bank.clone()
    torch.manual_seed(10 + rank)  # each rank its own images and noise rows
    x, indices = torch.randn(3, 1, 16, 16), torch.arange(3) + 8 * rank
    method.training_step([x], indices)
    f = method.features(x).detach()
    method.after_step(1, 10)
    return before, method.memory.bank, method.Z, f


def test_two_processes_update_all_ranks_rows_and_agree_on_Z():
    (before, bank0, Z0, f0), (_, bank1, Z1, f1) = run_distributed(_distributed_step, world=2)
    torch.testing.assert_close(bank0, bank1)
    torch.testing.assert_close(Z0, Z1)
    for rows, f in ((torch.arange(3), f0), (torch.arange(3) + 8, f1)):
        torch.testing.assert_close(bank0[rows], F.normalize(0.5 * before[rows] + 0.5 * f, dim=1))


def test_bank_knn_votes_with_exponential_weights():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.4]])
    assert bank_knn_predict(bank, labels, test, k=3).tolist() == [0, 1, 0]
    # with k = 5 and a flat weight (large τ) the majority label of the whole bank wins
    assert bank_knn_predict(bank, labels, test, k=5, temperature=1e6).tolist() == [1, 1, 1]


def test_trains_from_the_cli_on_digits_and_on_an_image_folder(tmp_path):
    small = ["--set", "feature_dim=16", "--set", "nce_k=64"]
    assert main(["train", "instdisc", "--data", "digits", "--max-steps", "3", "--out", str(tmp_path / "a"),
                 *TINY, *small]) == 0
    checkpoint = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert checkpoint["state_dict"]["method.memory.bank"].shape == (1438, 16)  # the digits training split
    assert checkpoint["state_dict"]["method.Z"] > 0
    write_images(tmp_path / "images", 40)
    assert main(["train", "instdisc", "--data", str(tmp_path / "images"), "--image-size", "16",
                 "--max-steps", "2", "--out", str(tmp_path / "b"), *TINY, *small]) == 0


def test_resume_restores_the_bank_and_Z(tmp_path, monkeypatch):
    saved, resumed = state_at_resume("instdisc", tmp_path, monkeypatch, data="digits", batch_size=32,
                                     limit_samples=200, **{**SMALL, "nce_k": 64})
    assert saved["method.Z"] > 0 and saved.keys() == resumed.keys()
    for key in saved:
        torch.testing.assert_close(resumed[key], saved[key])


@pytest.mark.slow
def test_instdisc_beats_random_init_on_fashion_mnist(tmp_path):
    # 1024 images: 18 epochs in 150 steps, so every bank row is refreshed many times (K is capped at n - 1).
    # τ 0.5: Z is fixed from the first batch, against a random bank; once the bank holds the (still similar)
    # features, exp(s/τ)/Z at τ 0.1 saturates h for every noise row and the loss grew 12 -> 128 in 100 steps.
    random_init, pretrained = knn_before_and_after("instdisc", tmp_path, limit_samples=1024, temperature=0.5,
                                                   crop_min_scale=0.4)
    assert pretrained > random_init + 0.02
