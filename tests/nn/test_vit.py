import pytest
import torch

from selfsup.errors import SelfsupError
from selfsup.nn import create_backbone
from selfsup.nn.decoders import MAEDecoder
from selfsup.nn.vit import encode_visible, encode_with_mask_token, patch_size, patchify, unpatchify

VIT = dict(img_size=12, patch_size=4, depth=2, embed_dim=32, num_heads=2)


def vit():
    torch.manual_seed(0)
    return create_backbone("timm:vit_tiny_patch16_224", in_chans=2, **VIT).eval()


def test_patchify_lays_out_each_patch_row_by_row_and_unpatchify_inverts_it_exactly():
    images = torch.randn(3, 2, 8, 12)
    patches = patchify(images, 4)  # grid 2 x 3
    assert patches.shape == (3, 6, 4 * 4 * 2)
    for b in range(3):
        for n in range(6):
            r, c = divmod(n, 3)
            block = images[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4]  # (C, p, p)
            expected = [block[ch, i, j] for i in range(4) for j in range(4) for ch in range(2)]
            assert torch.equal(patches[b, n], torch.stack(expected))
    assert torch.equal(unpatchify(patches, 4, (2, 3)), images)


def test_patchify_refuses_sizes_that_do_not_split():
    with pytest.raises(SelfsupError, match="multiple of 4"):
        patchify(torch.zeros(1, 1, 10, 12), 4)


def test_all_tokens_visible_is_timms_forward_features():
    model, x = vit(), torch.randn(2, 2, 12, 12)
    keep = torch.arange(9).expand(2, 9)
    torch.testing.assert_close(encode_visible(model, x, keep), model.forward_features(x))


def test_visible_tokens_keep_their_positions_and_hidden_ones_do_not_matter():
    model, x = vit(), torch.randn(2, 2, 12, 12)
    keep = torch.tensor([[0, 4, 8], [1, 2, 7]])
    out = encode_visible(model, x, keep)
    assert out.shape == (2, 1 + 3, 32)
    changed = x.clone()
    changed[:, :, 4:8, 0:4] = 5.0  # patch 3: hidden in both images
    torch.testing.assert_close(encode_visible(model, changed, keep), out)
    changed[:, :, 0:4, 0:4] = 5.0  # patch 0: visible in image 0 only
    moved = encode_visible(model, changed, keep)
    assert not torch.allclose(moved[0], out[0]) and torch.allclose(moved[1], out[1])


def test_mask_token_replaces_exactly_the_masked_embeddings():
    model, x = vit(), torch.randn(2, 2, 12, 12)
    token = torch.randn(32)
    mask = torch.zeros(2, 9)
    torch.testing.assert_close(encode_with_mask_token(model, x, mask, token), model.forward_features(x)[:, 1:])
    mask[:, 4] = 1
    out = encode_with_mask_token(model, x, mask, token)
    changed = x.clone()
    changed[:, :, 4:8, 4:8] = -3.0  # the masked patch's pixels are never seen
    torch.testing.assert_close(encode_with_mask_token(model, changed, mask, token), out)
    # same as embedding the patches by hand, swapping in the token, then timm's own layers
    tokens = model.patch_embed(x)
    tokens[:, 4] = token
    expected = model.norm(model.blocks(model._pos_embed(tokens)))[:, 1:]
    torch.testing.assert_close(out, expected)


def test_patch_size_needs_a_vit():
    assert patch_size(vit()) == 4
    with pytest.raises(SelfsupError, match="needs a timm VisionTransformer"):
        patch_size(create_backbone("resnet10t"))


def test_decoder_puts_visible_tokens_back_in_place_and_fills_the_rest_with_the_mask_token():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_dim=32, grid=(3, 3), patch_pixels=32, dim=16, depth=1, heads=2).eval()
    latent, keep = torch.randn(2, 1 + 3, 32), torch.tensor([[0, 4, 8], [1, 2, 7]])
    out = decoder(latent, keep)
    assert out.shape == (2, 9, 32)
    # the decoder's input sequence, built by hand
    embedded = decoder.embed(latent)
    sequence = decoder.mask_token.expand(2, 9, 16).clone()
    for b in range(2):
        for j, n in enumerate(keep[b]):
            sequence[b, n] = embedded[b, 1 + j]
    sequence = torch.cat([embedded[:, :1], sequence + decoder.pos_embed], dim=1)
    torch.testing.assert_close(out, decoder.pred(decoder.norm(decoder.blocks(sequence)))[:, 1:])
    assert decoder.pos_embed.shape == (9, 16) and not decoder.pos_embed.requires_grad
