import math

import torch
import torch.nn.functional as F

from selfsup.nn.regressor import CrossAttentionBlock, LatentRegressor, MaskedPatchDecoder


def naive_block(block: CrossAttentionBlock, x, context, pos_x, pos_context, heads: int) -> torch.Tensor:
    """The block with loops over samples and heads: positions in queries and keys, not in values."""
    D = x.shape[-1]
    dh = D // heads
    wq, wk, wv = block.attn.in_proj_weight.chunk(3)
    bq, bk, bv = block.attn.in_proj_bias.chunk(3)
    out = []
    for b in range(x.shape[0]):
        xn = F.layer_norm(x[b], (D,), block.norm_x.weight, block.norm_x.bias, 1e-6)
        cn = F.layer_norm(context[b], (D,), block.norm_context.weight, block.norm_context.bias, 1e-6)
        q, k, v = (xn + pos_x[b]) @ wq.T + bq, (cn + pos_context[b]) @ wk.T + bk, cn @ wv.T + bv
        per_head = []
        for h in range(heads):
            s = slice(h * dh, (h + 1) * dh)
            weights = torch.softmax(q[:, s] @ k[:, s].T / math.sqrt(dh), dim=-1)  # (m, T)
            per_head.append(weights @ v[:, s])
        attended = torch.cat(per_head, dim=-1) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        y = x[b] + block.ls_attn.gamma * attended
        out.append(y + block.ls_mlp.gamma * block.mlp(F.layer_norm(y, (D,), block.norm_mlp.weight,
                                                                   block.norm_mlp.bias, 1e-6)))
    return torch.stack(out)


def test_cross_attention_block_equals_a_float64_loop_in_values_and_gradients():
    torch.manual_seed(0)
    block = CrossAttentionBlock(8, 2, init_values=0.5).double()
    x, context, pos_x, pos_context = (torch.randn(3, n, 8, dtype=torch.float64) for n in (4, 6, 4, 6))
    for p in block.parameters():  # away from the initialisation (zero biases, unit norms)
        p.data.add_(0.1 * torch.randn_like(p))
    ours = block(x, context, pos_x, pos_context)
    reference = naive_block(block, x, context, pos_x, pos_context, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    params = list(block.parameters())
    for a, b in zip(torch.autograd.grad(ours.sum(), params), torch.autograd.grad(reference.sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_regressor_and_decoder_shapes_and_positions():
    torch.manual_seed(0)
    regressor = LatentRegressor(16, (3, 3), depth=2, heads=2, num_prefix_tokens=1, init_values=0.1)
    decoder = MaskedPatchDecoder(16, (3, 3), out_dim=5, depth=1, heads=2)
    keep, masked = torch.tensor([[0, 2, 4, 8], [1, 3, 5, 7]]), torch.tensor([[1, 3, 5, 6, 7], [0, 2, 4, 6, 8]])
    z = regressor(torch.randn(2, 5, 16), keep, masked)
    assert z.shape == (2, 5, 16) and decoder(z, masked).shape == (2, 5, 5)
    assert torch.equal(regressor.pos_embed, decoder.pos_embed) and regressor.pos_embed.shape == (9, 16)
    assert "pos_embed" not in regressor.state_dict()  # fixed, rebuilt from the grid
    # the decoder's output for a masked latent depends on its position: the same latents at other positions differ
    same = z[:1].expand(2, -1, -1)
    out = decoder(same, masked)
    assert not torch.allclose(out[0], out[1])
