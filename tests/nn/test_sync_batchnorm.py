import pytest
import torch
from torch import nn

from selfsup.nn.sync_batchnorm import GlobalBatchNorm, convert_global_batchnorm, revert_global_batchnorm
from tests.distributed import assert_matches_one_process, run_distributed


def _bn(kind=nn.BatchNorm2d, channels=3) -> nn.Module:
    torch.manual_seed(3)
    bn = kind(channels).double()
    with torch.no_grad():  # non-trivial affine parameters, so that their gradients matter
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(0.0, 2.0)  # GlobalBatchNorm shifts its sums by the running mean
    return bn


def _x(shape=(8, 3, 4, 5)) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(*shape, dtype=torch.float64) * 3 + 1


@pytest.mark.parametrize("kind, shape", [(nn.BatchNorm1d, (8, 3)), (nn.BatchNorm2d, (8, 3, 4, 5))])
def test_on_one_process_it_is_the_layer_it_was_built_from(kind, shape):
    x = _x(shape)
    bn, global_bn = _bn(kind), GlobalBatchNorm(_bn(kind))
    for mode in (True, False):
        bn.train(mode), global_bn.train(mode)
        torch.testing.assert_close(global_bn(x), bn(x))
    torch.testing.assert_close(global_bn.running_var, bn.running_var)


def _global_bn_loss(x: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient depends on every sample through the batch statistics."""
    bn = GlobalBatchNorm(_bn()).train()
    y = bn(x)  # (B, 3, 4, 5)
    weights = torch.linspace(-1, 2, y[0].numel(), dtype=y.dtype).view(y[0].shape)
    return (y ** 3 * weights).mean() + y.sin().mean()


def test_two_processes_normalise_with_the_statistics_of_the_whole_batch():
    """Forward and gradients on 2 x 4 images equal one BatchNorm on the 8 (the loss harness, float64)."""
    assert_matches_one_process(_global_bn_loss, (_x(),))


def _running_stats(rank: int, world: int):
    bn = GlobalBatchNorm(_bn()).train()
    bn(_x().chunk(world)[rank])
    return bn.running_mean, bn.running_var, bn.num_batches_tracked


def test_running_statistics_are_those_of_the_whole_batch():
    bn = _bn().train()
    bn(_x())
    for mean, var, count in run_distributed(_running_stats, world=2):
        torch.testing.assert_close(mean, bn.running_mean)
        torch.testing.assert_close(var, bn.running_var)  # unbiased over the 8 images, as torch's BN
        assert count == 1


def test_convert_and_revert_keep_the_parameters_and_state_dict_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 36)))
    params, keys = list(model.parameters()), list(model.state_dict())
    convert_global_batchnorm(model)
    assert isinstance(model[1], GlobalBatchNorm) and isinstance(model[2][1], GlobalBatchNorm)
    assert all(a is b for a, b in zip(model.parameters(), params)) and list(model.state_dict()) == keys
    revert_global_batchnorm(model)
    assert type(model[1]) is nn.BatchNorm2d and type(model[2][1]) is nn.BatchNorm1d
    assert all(a is b for a, b in zip(model.parameters(), params)) and list(model.state_dict()) == keys
