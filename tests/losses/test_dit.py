"""DiT's loss (BEiT eq. 1) against a float64 loop over the masked patches, values and gradients, and against the loss
HF transformers' BeitForMaskedImageModeling computes itself."""

import math

import pytest
import torch

from selfsup.losses.dit import MaskedTokenLoss, masked_token_loss


def naive_masked_token_loss(logits: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-(1/|M|) Σ_{(b, i) masked} log( exp(l_{b,i,z}) / Σ_k exp(l_{b,i,k}) ), one patch at a time, in float64."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    B, N, K = logits.shape
    for b in range(B):
        for i in range(N):
            if not mask[b, i]:
                continue
            row = logits[b, i].double()
            z = int(codes[b, i])
            total = total - (row[z] - torch.log(sum(torch.exp(row[k]) for k in range(K))))
            count += 1
    return total / count


def example(B: int = 3, N: int = 6, K: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, N, K, generator=g) * 3).double().requires_grad_(True)
    codes = torch.randint(K, (B, N), generator=g)
    mask = torch.rand(B, N, generator=g) < 0.4
    mask[0, 0], mask[1, 1] = True, False  # not all masked, not none
    return logits, codes, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_equals_a_float64_loop_in_value_and_gradient(seed):
    logits, codes, mask = example(seed=seed)
    ours = masked_token_loss(logits, codes, mask)
    ref_logits = logits.detach().clone().requires_grad_(True)
    ref = naive_masked_token_loss(ref_logits, codes, mask)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-9)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-9)
    assert (logits.grad[~mask] == 0).all()  # visible patches get no gradient


def test_a_hand_computed_value():
    # one masked patch, K = 2, logits (0, log 3): p(z = 1) = 3/4, so L = -log 3/4; the visible patch does not count
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    assert masked_token_loss(logits, torch.tensor([[1, 1]]), torch.tensor([[True, False]])).item() == pytest.approx(
        -math.log(0.75), rel=1e-6)


def test_gathered_logits_give_the_same_loss_and_the_module_form_agrees():
    logits, codes, mask = example()
    full = masked_token_loss(logits, codes, mask)
    gathered = masked_token_loss(logits[mask], codes, mask)  # (M, K), the method's form
    assert torch.equal(full, gathered) and torch.equal(MaskedTokenLoss()(logits, codes, mask), full)


def test_no_masked_patch_gives_zero_with_a_gradient():
    logits, codes, _ = example()
    loss = masked_token_loss(logits, codes, torch.zeros(codes.shape, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()


def test_equals_the_loss_hf_beit_computes_itself():
    from transformers import BeitConfig, BeitForMaskedImageModeling

    torch.manual_seed(0)
    config = BeitConfig(vocab_size=11, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, image_size=32, patch_size=8, num_channels=1, use_mask_token=True)
    model = BeitForMaskedImageModeling(config).eval()
    x = torch.randn(2, 1, 32, 32)
    codes = torch.randint(11, (2, 16))
    mask = torch.rand(2, 16) < 0.4
    out = model(x, bool_masked_pos=mask, labels=codes[mask])
    torch.testing.assert_close(masked_token_loss(out.logits, codes, mask), out.loss)
