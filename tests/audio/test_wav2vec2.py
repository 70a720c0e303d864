import math

import pytest
import torch

from selfsup.audio.wav2vec2 import Wav2Vec2Pretraining, normalise
from selfsup.losses.wav2vec2 import perplexity

TINY = dict(hidden=32, layers=2, heads=2, intermediate=64, conv_dim=32, codewords=16, codevector_dim=32, final_dim=32,
            distractors=10, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def tiny(**kwargs) -> Wav2Vec2Pretraining:
    torch.manual_seed(0)
    return Wav2Vec2Pretraining(**{**TINY, **kwargs})


def audio(B: int = 3, S: int = 8000, seed: int = 0, segment: int = 3200) -> torch.Tensor:
    """(B, S) 16 kHz synthetic speech-like audio: tones whose pitch (100 .. 1500 Hz) changes every `segment`
    samples (200 ms, 10 steps: something for the context to predict), plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    pitch = 100.0 * torch.randint(1, 16, (B, S // segment + 1), generator=g).float()
    pitch = pitch.repeat_interleave(segment, 1)[:, :S]  # (B, S) Hz
    return torch.sin(torch.cumsum(2 * math.pi * pitch / 16000, 1)) + 0.05 * torch.randn(B, S, generator=g)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def wav2vec2_pretraining(C: int, H: int, L: int, I: int, P: int, P_groups: int, G: int, V: int, d: int, D: int) -> int:
    kernels = (10, 3, 3, 3, 3, 2, 2)
    cnn = sum(c_in * C * k + C + 2 * C for c_in, k in zip((1,) + (C,) * 6, kernels))  # conv + bias + LayerNorm
    projection = 2 * C + linear(C, H) + H  # LayerNorm(C), C -> H, the learned mask embedding
    positional = H * (H // P_groups) * P + P + H  # grouped conv, weight norm's gain per tap, bias
    layer = 4 * linear(H, H) + 2 * H + linear(H, I) + linear(I, H) + 2 * H  # attention + LN, feed-forward + LN
    transformer = positional + 2 * H + L * layer  # + the final LayerNorm (pre-LN)
    quantiser = G * V * (d // G) + linear(C, G * V)  # codebooks; logits from the CNN features
    heads = linear(H, D) + linear(d, D)  # project_hid, project_q
    return cnn + projection + transformer + quantiser + heads


def test_default_size_and_parameter_count():
    model = Wav2Vec2Pretraining()
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (256, 4, 4)
    assert config.conv_stride == (5, 2, 2, 2, 2, 2, 2) and math.prod(config.conv_stride) == 320
    assert (config.num_codevector_groups, config.num_codevectors_per_group) == (2, 320)
    assert n_params(model) == wav2vec2_pretraining(128, 256, 4, 1024, 128, 16, 2, 320, 256, 256) == 4_279_936
    assert model.steps(32000) == 99  # 2 s -> 20 ms steps; 400 samples is the receptive field of one
    assert model.steps(400) == 1 and model.steps(399) == 0


def test_base_size():
    base = Wav2Vec2Pretraining(hidden=768, layers=12, heads=12, intermediate=3072, conv_dim=512)
    assert n_params(base) == wav2vec2_pretraining(512, 768, 12, 3072, 128, 16, 2, 320, 256, 256)  # 95.05M
    # transformers' wav2vec2-base has 95.04M: its CNN has GroupNorm in the first layer only and no conv bias


def test_forward_gives_finite_losses_and_gradients_to_every_part():
    model = tiny().train()
    waves, lengths = audio(), torch.tensor([8000, 6000, 4000])
    out = model(waves, lengths, generator=torch.Generator().manual_seed(1))
    assert set(out) >= {"loss", "contrastive", "diversity", "feature_penalty", "perplexity", "mask_fraction",
                        "gumbel_temperature"}
    assert all(torch.isfinite(v).all() and v.ndim == 0 for v in out.values())
    expected = out["contrastive"] + 0.1 * out["diversity"] + 10.0 * out["feature_penalty"]
    torch.testing.assert_close(out["loss"], expected)
    assert 2 <= out["perplexity"].item() <= 2 * 16 and out["gumbel_temperature"].item() == 2.0
    assert 0.2 < out["mask_fraction"].item() < 0.8
    out["loss"].backward()
    parts = {"feature encoder": model.wav2vec2.feature_extractor.conv_layers[0].conv.weight,
             "codebook": model.quantizer.codevectors, "quantiser logits": model.quantizer.weight_proj.weight,
             "mask embedding": model.wav2vec2.masked_spec_embed,
             "transformer": model.wav2vec2.encoder.layers[0].attention.q_proj.weight,
             "context projection": model.project_hid.weight, "target projection": model.project_q.weight}
    for name, p in parts.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_eval_mode_forward_and_seeded_masks():
    model = tiny().eval()
    waves, lengths = audio(), torch.tensor([8000, 8000, 5000])
    with torch.no_grad():
        a = model(waves, lengths, generator=torch.Generator().manual_seed(2))
        b = model(waves, lengths, generator=torch.Generator().manual_seed(2))
    assert all(torch.isfinite(v) for v in a.values())
    torch.testing.assert_close(a["loss"], b["loss"])  # eval: argmax codes, no dropout; same seed, same masks


def test_hf_quantiser_perplexity_is_soft_in_train_mode_and_hard_in_eval_mode():
    # why the model recomputes the logits: the perplexity transformers' quantiser returns depends on the mode
    model = tiny()
    y = torch.randn(40, 32)
    probs = model.quantizer.weight_proj(y).view(40, 2, 16).softmax(-1)
    torch.testing.assert_close(model.quantizer.train()(y[None])[1], perplexity(probs))
    hard = torch.nn.functional.one_hot(probs.argmax(-1), 16).float()
    torch.testing.assert_close(model.quantizer.eval()(y[None])[1], perplexity(hard))


def test_gumbel_temperature_follows_the_step():
    model = tiny()
    model.set_step(0, 100)
    assert model.quantizer.temperature == 2.0
    model.set_step(200_000, 400_000)
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.999995**200_000)
    short = tiny(gumbel_decay=None)  # reach the end at the end of the run
    short.set_step(50, 100)
    assert short.quantizer.temperature == pytest.approx(1.0)
    short.set_step(100, 100)
    assert short.quantizer.temperature == pytest.approx(0.5)


def test_normalise_uses_only_the_valid_samples():
    waves = torch.randn(2, 1000) * 3 + 2
    valid = torch.arange(1000)[None] < torch.tensor([[1000], [600]])
    x = normalise(waves, valid)
    assert (x[1, 600:] == 0).all()
    for b, n in [(0, 1000), (1, 600)]:
        assert abs(x[b, :n].mean().item()) < 1e-5 and abs(x[b, :n].var(unbiased=False).item() - 1) < 1e-4


def test_embed_ignores_padding():
    model = tiny().eval()
    waves = audio(2, 9000)
    short = waves[1:, :5000]
    padded = torch.cat([short, torch.full((1, 4000), 7.0)], dim=1)  # garbage past the length
    with torch.no_grad():
        batch = model.embed(torch.cat([waves[:1], padded]), torch.tensor([9000, 5000]))
        alone = model.embed(short, torch.tensor([5000]))
    assert batch.shape == (2, 32)
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-4)


def test_clips_shorter_than_one_step_are_rejected():
    with pytest.raises(ValueError, match="400 samples"):
        tiny()(audio(2, 1000), torch.tensor([1000, 300]))


@pytest.mark.slow
def test_a_few_adam_steps_lower_the_contrastive_loss():
    # A fixed batch and a fixed mask: the network can fit them, so the loss must fall if gradients flow right.
    model = tiny(dropout=0.0, layerdrop=0.0, gumbel_decay=None).train()  # temperature 2 -> 0.5 over the 40 steps
    waves, lengths = audio(4, 8000), torch.full((4,), 8000)  # 0.5 s, 24 steps
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for step in range(40):
        model.set_step(step, 40)
        out = model(waves, lengths, generator=torch.Generator().manual_seed(0))
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        losses.append(out["contrastive"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, losses
    # not by collapse (one codeword per codebook makes every distractor equal to its target, loss 0)
    assert out["code_perplexity"].item() > 2.0
