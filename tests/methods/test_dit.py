"""DiT and its pixel-target ablation: paper defaults, the views' block masks (ratio, blocks, seeding), the training step
against a reference on HF's own forward, the tokenizer errors, and the CLI on a folder of PDFs and of page images
(train, exact resume, cached codes, export, eval)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from selfsup.cli import main
from selfsup.document import VQVAE, TokenizerConfig
from selfsup.document import codes as codes_module
from selfsup.document.train import KEY, write_atomic
from selfsup.errors import SelfsupError
from selfsup.losses.reconstruction import normalize_patches
from selfsup.methods import METHODS, build, make_config
from selfsup.methods.dit import PagesWithCodes, PageViews
from selfsup.nn.vit import patchify
from selfsup.train.resume import KeyedSamples
from selfsup.views import TransformedImages
from selfsup.views.eval import EvalTransform
from tests.resume_check import resumed_like_uninterrupted

TINY = ["--set", "hidden=16", "--set", "layers=1", "--set", "heads=2", "--set", "intermediate=32"]
TINY_OPTIONS = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32}


def tokenizer_checkpoint(path, codes: int = 16, patch: int = 8, image_size: int = 32):
    """A tokenizer checkpoint as `selfsup train-tokenizer` writes it, of a VQVAE at random init."""
    torch.manual_seed(0)
    model = VQVAE(TokenizerConfig(patch=patch, codes=codes, dim=4, width=8, image_size=image_size))
    write_atomic({KEY: {"config": model.describe()}, "state_dict": model.state_dict()}, path)
    return path


def tiny_dit(tmp_path, name: str = "dit", **options):
    extra = {"tokenizer": str(tokenizer_checkpoint(tmp_path / "tok.ckpt"))} if name == "dit" else {"patch": 8}
    return build(name, {"in_chans": 1, "image_size": 32}, **{**TINY_OPTIONS, **extra, **options})


def test_registry_has_the_beit_recipe_and_states_the_deviations():
    for name in ("dit", "dit-pixel"):
        cls = METHODS[name]
        c = make_config(name)
        assert cls.modality == "image" and "DiT" in cls.paper and cls.run_defaults["data"] == "doc-pages"
        assert (c.mask_ratio, c.mask_min_aspect, c.layer_scale, c.optimizer, c.weight_decay) == (0.4, 0.3, 0.1,
                                                                                                "adamw", 0.05)
        assert c.lr == pytest.approx(1.5e-3 * 256 / 2048)  # BEiT: 1.5e-3 at batch 2048
        assert "crop" in cls.deviations and "12 layers" in cls.deviations
    assert "8,192" in METHODS["dit"].deviations and make_config("dit").tokenizer.endswith("tokenizer.ckpt")
    assert not hasattr(make_config("dit-pixel"), "tokenizer")  # no option that would be silently ignored


def test_the_network_is_hf_beit_with_the_tokenizers_codebook_and_patch(tmp_path):
    from transformers import BeitForMaskedImageModeling, BeitModel

    method = tiny_dit(tmp_path)
    assert isinstance(method.model, BeitForMaskedImageModeling) and isinstance(method.encoder(), BeitModel)
    assert method.model.config.vocab_size == 16 and method.model.config.patch_size == 8 and method.grid == (4, 4)
    assert method.data_meta["in_chans"] == 1 and method.data_meta["page_tokenizer"]["codes"] == 16
    pixel = tiny_dit(tmp_path, "dit-pixel")
    assert pixel.model.config.vocab_size == 8 * 8 and "page_tokenizer" not in pixel.data_meta


def pages_and_codes(n: int = 6, size: int = 32, grid: int = 4):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 16, (n, grid, grid), generator=g))


def test_views_keep_the_page_and_its_codes_and_block_mask_40_percent_from_the_seed():
    pages, codes = pages_and_codes(n=40, size=224, grid=14)
    views = PageViews(224, (14, 14), 0.4, 16, 0.3)
    keyed = KeyedSamples(TransformedImages(PagesWithCodes(pages, codes), views), seed=7)
    items = [keyed[(0, i)] for i in range(40)]
    for i, ((x, mask, z), _, index) in enumerate(items):
        assert index == i and torch.equal(x, EvalTransform(224, 1)(pages[i]))  # as evaluation sees the page
        torch.testing.assert_close(x, (pages[i] / 255 - 0.5) / 0.5)  # no crop, no flip: pixel for pixel
        assert torch.equal(z, codes[i].flatten())  # the page's codes, patch for patch
        assert mask.dtype == torch.bool and int(mask.sum()) == round(0.4 * 196)  # 78 of 196
    masks = torch.stack([item[0][1] for item in items]).view(40, 14, 14)
    # block-wise: most hidden patches have a hidden 4-neighbour (a random 40 % mask: about 1 - 0.6^4 = 0.87 of them
    # have one; BEiT's blocks of >= 16 patches leave almost none alone)
    padded = F.pad(masks.float(), (1, 1, 1, 1))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    assert ((neighbours > 0) & masks).sum() / masks.sum() > 0.97
    again = KeyedSamples(TransformedImages(PagesWithCodes(pages, codes), views), seed=7)
    assert torch.equal(again[(0, 3)][0][1], items[3][0][1])  # same (seed, epoch, page): the same mask
    assert not torch.equal(again[(1, 3)][0][1], items[3][0][1])  # another epoch: another mask
    other = KeyedSamples(TransformedImages(PagesWithCodes(pages, codes), views), seed=8)
    assert not torch.equal(other[(0, 3)][0][1], items[3][0][1])
    assert not torch.equal(items[4][0][1], items[3][0][1])


def test_training_step_equals_cross_entropy_on_hf_beits_own_forward(tmp_path):
    method = tiny_dit(tmp_path)
    pages, codes = pages_and_codes(n=4)
    views = method.default_views(32, 1)
    batch = [torch.stack(v) for v in zip(*(views((pages[i], codes[i])) for i in range(4)))]
    x, mask, z = batch
    out = method.training_step(batch)
    grads = torch.autograd.grad(out["loss"], list(method.model.parameters()), allow_unused=True)
    logits = method.model(x, bool_masked_pos=mask).logits  # (B, N, K), HF's forward
    reference = F.cross_entropy(logits[mask].double(), z[mask])
    torch.testing.assert_close(out["loss"].double(), reference, rtol=1e-5, atol=1e-6)
    ref_grads = torch.autograd.grad(reference, list(method.model.parameters()), allow_unused=True)
    for ours, ref in zip(grads, ref_grads):
        if ref is not None:
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    assert 0 <= out["accuracy"] <= 1


def test_masked_patches_are_predicted_without_seeing_their_pixels(tmp_path):
    method = tiny_dit(tmp_path).eval()
    x = torch.randn(2, 1, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, [0, 5, 6, 15]] = True
    changed = x.clone()
    changed[:, :, :8, :8] += 5.0  # patch 0, which is hidden
    with torch.no_grad():
        torch.testing.assert_close(method.predict_masked(changed, mask), method.predict_masked(x, mask))
        unmasked = torch.zeros_like(mask)
        unmasked[:, 5] = True  # patch 0 now visible: the other predictions see it
        assert not torch.allclose(method.predict_masked(changed, unmasked), method.predict_masked(x, unmasked))


def test_the_pixel_ablation_regresses_normalised_pixels_of_the_masked_patches(tmp_path):
    method = tiny_dit(tmp_path, "dit-pixel")
    pages, _ = pages_and_codes(n=3)
    views = method.default_views(32, 1)
    batch = [torch.stack(v) for v in zip(*(views(pages[i]) for i in range(3)))]
    x, mask = batch
    loss = method.training_step(batch)["loss"]
    pred = method.model(x, bool_masked_pos=mask).logits.double()  # (B, N, 64)
    target = normalize_patches(patchify(x.double(), 8))
    total, count = 0.0, 0
    for b in range(3):
        for i in range(16):
            if mask[b, i]:
                total = total + ((pred[b, i] - target[b, i]) ** 2).mean()
                count += 1
    torch.testing.assert_close(loss.double(), total / count, rtol=1e-5, atol=1e-6)


def test_features_are_pooled_patch_states_and_fine_tuning_keeps_the_encoder(tmp_path):
    method = tiny_dit(tmp_path).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        h = method.encoder()(x).last_hidden_state  # (B, 1 + 16, D)
        torch.testing.assert_close(method.embed(x), h[:, 1:].mean(1))
        assert method.dense_features(x).shape == (3, 16, 4, 4)
        torch.testing.assert_close(method.dense_features(x)[:, :, 1, 2], h[:, 1 + 6])
    assert {id(p) for p in method.finetune_encoder().parameters()} == {id(p) for p in method.encoder().parameters()}
    cls_pooled = tiny_dit(tmp_path, pooling="cls").eval()
    with torch.no_grad():
        torch.testing.assert_close(cls_pooled.embed(x), cls_pooled.encoder()(x).last_hidden_state[:, 0])


def test_a_missing_or_wrong_tokenizer_or_option_is_one_clear_error(tmp_path):
    with pytest.raises(SelfsupError, match="selfsup train-tokenizer") as missing:
        build("dit", {"in_chans": 1}, tokenizer=str(tmp_path / "nope.ckpt"))
    assert "--set tokenizer=" in str(missing.value)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(SelfsupError, match="not a tokenizer checkpoint"):
        build("dit", {"in_chans": 1}, tokenizer=str(tmp_path / "other.ckpt"))
    with pytest.raises(SelfsupError, match="not a multiple of heads"):
        tiny_dit(tmp_path, heads=3)
    with pytest.raises(SelfsupError, match="unknown pooling"):
        tiny_dit(tmp_path, pooling="max")
    with pytest.raises(SelfsupError, match="pass --image-size 32"):
        tiny_dit(tmp_path).default_views(64, 1)  # its tokenizer coded 32 px pages


# ---- the command line, on a folder of PDFs and one of page images ----------------------------------------------

@pytest.fixture
def pdf_folder(tmp_path):
    """Two PDFs of two pages each (lines of 'text' as dark bars), rendered to 224 px grey pages by selfsup."""
    folder = tmp_path / "pdfs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.pdf", "b.pdf"):
        pages = []
        for _ in range(2):
            page = np.full((792, 612), 255, dtype=np.uint8)
            for y in range(80, 700, int(rng.integers(20, 40))):
                page[y:y + 10, 72:72 + int(rng.integers(200, 468))] = 0
            pages.append(Image.fromarray(page))
        pages[0].save(folder / name, "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    return folder


def test_cli_refuses_a_missing_tokenizer_in_one_line(pdf_folder, tmp_path, capsys):
    code = main(["train", "dit", "--data", str(pdf_folder), "--set", f"tokenizer={tmp_path / 'none.ckpt'}",
                 "--max-steps", "1", "--batch-size", "2", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "selfsup train-tokenizer" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_trains_on_a_pdf_folder_resumes_exactly_from_cached_codes_and_exports(pdf_folder, tmp_path, monkeypatch):
    from transformers import AutoModel

    from selfsup.checkpoints import load_method
    from selfsup.data.cache import cache_root

    tok = tmp_path / "tok"
    assert main(["train-tokenizer", "--data", str(pdf_folder), "--out", str(tok), "--max-steps", "2",
                 "--batch-size", "2", "--codes", "16", "--width", "8", "--no-progress"]) == 0
    run = tmp_path / "run"
    assert main(["train", "dit", "--data", str(pdf_folder), "--set", f"tokenizer={tok / 'tokenizer.ckpt'}", *TINY,
                 "--max-steps", "4", "--batch-size", "2", "--checkpoint-every", "1", "--num-workers", "0",
                 "--out", str(run), "--no-progress"]) == 0
    assert len(list((cache_root() / codes_module.FOLDER).glob("*.npy"))) == 1  # the 4 pages' codes, cached
    monkeypatch.setattr(codes_module, "load_tokenizer", lambda *a: pytest.fail("page codes computed again"))
    full, _ = resumed_like_uninterrupted("dit", run, step=2)
    monkeypatch.undo()
    assert full["global_step"] == 4
    losses = [float(line.split(",")[2]) for line in (run / "logs/csv/version_0/metrics.csv").read_text().splitlines()[1:]
              if line.split(",")[2]]
    assert losses and all(np.isfinite(losses)) and abs(losses[0] - np.log(16)) < 1.5  # about log K at the start

    checkpoint = run / "checkpoints" / "last.ckpt"
    (tok / "tokenizer.ckpt").unlink()  # evaluation and export rebuild the network from the checkpoint alone
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "beit")]) == 0
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "beit.onnx")]) == 1
    assert not (tmp_path / "beit.onnx").exists()  # refused in one line, not a Hugging Face folder named .onnx
    method, _ = load_method(checkpoint)
    exported = AutoModel.from_pretrained(str(tmp_path / "beit")).eval()
    x = method.eval_batch([torch.randint(0, 256, (1, 224, 224), dtype=torch.uint8) for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(exported(x).last_hidden_state[:, 1:].mean(1), method.embed(x))
    labelled = tmp_path / "labelled"
    for label, shade in (("dark", 40), ("light", 220)):
        (labelled / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((300, 230), shade + i, dtype=np.uint8)).save(labelled / label / f"{i}.png")
    assert main(["eval", "knn", "--checkpoint", str(checkpoint), "--data", str(labelled), "--k", "1",
                 "--out", str(tmp_path / "knn.json")]) == 0
    assert 0 <= json.loads((tmp_path / "knn.json").read_text())["top1"] <= 1


@pytest.mark.slow
def test_the_pixel_ablation_trains_on_a_folder_of_page_images(tmp_path, capsys):
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):  # colour scans of another size than the 224 px pages: fitted as grey pages
        scan = np.full((500, 380, 3), 250, dtype=np.uint8)
        scan[60:440:25, 40:int(rng.integers(200, 340))] = (20, 30, 90)
        Image.fromarray(scan).save(folder / f"page{i}.png")
    run = tmp_path / "run"
    assert main(["train", "dit-pixel", "--data", str(folder), *TINY, "--max-steps", "2", "--batch-size", "2",
                 "--num-workers", "0", "--out", str(run), "--no-progress"]) == 0
    assert "dit-pixel | beit-1x16-p16" in capsys.readouterr().out
    from selfsup.checkpoints import read_checkpoint

    checkpoint = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 and checkpoint["selfsup"]["data_meta"]["in_chans"] == 1
