"""`selfsup train-tokenizer` end to end on a tiny folder of PDFs and page images, the checkpoint read back, and the
page codes computed once per tokenizer."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.cli import main
from selfsup.document import VQVAE, TokenizerConfig, code_statistics, load_tokenizer, page_codes
from selfsup.document import codes as codes_module
from selfsup.document.train import CHECKPOINT, GRID, KEY, write_atomic
from selfsup.errors import SelfsupError


@pytest.fixture
def page_folder(tmp_path):
    """Two 2-page PDFs (lines of 'text' as dark bars), a page scan of another size, and a corrupt PDF."""
    folder = tmp_path / "pages"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.pdf", "b.pdf"):
        pages = []
        for _ in range(2):
            page = np.full((792, 612), 255, dtype=np.uint8)
            for y in range(80, 700, 30):
                page[y:y + 10, 72:72 + int(rng.integers(200, 468))] = 0
            pages.append(Image.fromarray(page))
        pages[0].save(folder / name, "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    Image.fromarray(np.full((500, 380), 230, dtype=np.uint8)).save(folder / "scan.png")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 cut short")
    return folder


@pytest.mark.slow
def test_train_tokenizer_cli_on_a_folder(page_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "tok"
    assert main(["train-tokenizer", "--data", str(page_folder), "--out", str(out), "--max-steps", "3",
                 "--batch-size", "2", "--codes", "16", "--width", "8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1 corrupt PDF (broken.pdf)" in captured.err  # the counted skip
    assert "train-tokenizer recon MSE" in captured.out and "14x14 codes per page" in captured.out
    assert "5 pages" in captured.out
    summary = json.loads((out / "tokenizer.json").read_text())
    assert summary["steps"] == 3 and summary["codes"] == 16 and np.isfinite(summary["loss"])
    grid = Image.open(out / GRID)
    assert grid.size == (5 * 224 + 6 * 4, 2 * 224 + 3 * 4)  # 5 pages: originals above reconstructions
    model = load_tokenizer(out / CHECKPOINT)
    assert model.config.codes == 16 and model.config.image_size == 224 and not model.training

    first = page_codes(out / CHECKPOINT, str(page_folder))
    assert first.shape == (5, 14, 14) and first.dtype == torch.int64 and 0 <= first.min() and first.max() < 16
    # the summary's codes used and perplexity are of the codes of all training pages (here: all 5), not of a batch
    stats = code_statistics(first)
    assert summary["codes_used"] == stats["codes_used"] and summary["code_perplexity"] == stats["code_perplexity"]
    assert f"{stats['codes_used']}/16 codes used on all pages" in captured.out and "batch_perplexity" in summary
    monkeypatch.setattr(codes_module, "load_tokenizer", lambda *a: pytest.fail("codes computed again"))
    assert torch.equal(page_codes(out / CHECKPOINT, str(page_folder)), first)  # read from the cache
    monkeypatch.undo()
    not_a_tokenizer = tmp_path / "other.ckpt"
    torch.save({"something": 1}, not_a_tokenizer)  # other bytes: another cache entry, so it is loaded (and refused)
    with pytest.raises(SelfsupError, match="not a tokenizer checkpoint"):
        page_codes(not_a_tokenizer, str(page_folder))


def test_train_tokenizer_refuses_bad_data_in_one_line(tmp_path, capsys):
    (tmp_path / "only.pdf").write_bytes(b"")
    assert main(["train-tokenizer", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--max-steps", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no usable page" in err and "1 corrupt PDF (only.pdf)" in err
    assert main(["train-tokenizer", "--data", "fashion-mnist", "--out", str(tmp_path / "o")]) == 1
    assert "pass doc-pages or doc-genres" in capsys.readouterr().err
    assert main(["train-tokenizer", "--data", str(tmp_path / "only.pdf"), "--out", str(tmp_path / "o")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["train-tokenizer", "--data", "doc-pages", "--out", str(tmp_path / "o"), "--patch", "12"]) == 1
    assert "not a power of 2" in capsys.readouterr().err  # refused before any page is read


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(SelfsupError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip")
    with pytest.raises(SelfsupError, match="cannot read"):
        load_tokenizer(tmp_path / "junk.ckpt")


def test_a_checkpoint_from_before_the_encoder_option_loads_its_whole_page_encoder(tmp_path):
    model = VQVAE(TokenizerConfig(patch=8, codes=4, dim=2, width=8, image_size=16, encoder="conv"))
    config = model.describe()
    del config["encoder"]  # as checkpoints written before the option
    write_atomic({KEY: {"config": config}, "state_dict": model.state_dict()}, tmp_path / "old.ckpt")
    x = torch.rand(1, 1, 16, 16)
    assert load_tokenizer(tmp_path / "old.ckpt").config.encoder == "conv"
    assert torch.equal(load_tokenizer(tmp_path / "old.ckpt").encode(x), model.eval().encode(x))


@pytest.fixture
def image_pages(tmp_path):
    """Six 224 px page images (dark bars of 'text' on white): no PDF to render, so runs start at once."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        page = np.full((224, 224), 255, dtype=np.uint8)
        for y in range(20, 200, 12):
            page[y:y + 5, 16:16 + int(rng.integers(40, 190))] = 0
        Image.fromarray(page).save(folder / f"page{i}.png")
    return folder


def _tiny(folder, out, steps, *extra):
    """train-tokenizer's arguments for a tiny run of `steps` (None: no --max-steps)."""
    length = ["--max-steps", str(steps)] if steps else []
    return ["train-tokenizer", "--data", str(folder), "--out", str(out), *length, "--codes", "16", "--width", "8",
            "--batch-size", "2", "--no-progress", *extra]


_AFTER_STEP = VQVAE.after_step


def _at_step(monkeypatch, step, action):
    """Run `action` right after the tokenizer's `step`-th after_step (its restarts done, the step complete)."""
    def after_step(self):
        _AFTER_STEP(self)
        if int(self.step) == step:
            action()
    monkeypatch.setattr(VQVAE, "after_step", after_step)


def test_train_tokenizer_resumes_exactly(image_pages, tmp_path, capsys, monkeypatch):
    # codes unused for one step restart on encoder outputs drawn from torch's global generator: a resume that did not
    # restore that generator (or the batch sampler's, or Adam's moments) would end on other weights
    monkeypatch.setattr(VQVAE, "RESTART_AFTER", 1)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(_tiny(image_pages, whole, 8)) == 0
    assert main(_tiny(image_pages, parts, 3)) == 0  # a finished shorter run, extended below
    capsys.readouterr()

    def crash():
        raise RuntimeError("power cut")
    _at_step(monkeypatch, 6, crash)  # dies in step 6: the state saved after step 4 (every 2 steps) is what is left
    with pytest.raises(RuntimeError, match="power cut"):
        main(_tiny(image_pages, parts, 8, "--checkpoint-every", "2"))
    assert "resuming train-tokenizer from step 3 of" in capsys.readouterr().out
    _at_step(monkeypatch, 6, lambda: os.kill(os.getpid(), signal.SIGTERM))  # stops after step 6, saving it
    assert main(_tiny(image_pages, parts, 8, "--checkpoint-every", "2")) == 143
    captured = capsys.readouterr()
    assert "resuming train-tokenizer from step 4 of" in captured.out
    assert "stopped by SIGTERM after step 6 of 8" in captured.err and captured.err.count("\n") == 1
    monkeypatch.setattr(VQVAE, "after_step", _AFTER_STEP)
    assert main(_tiny(image_pages, parts, None)) == 0  # without --max-steps: the saved run's 8
    assert "resuming train-tokenizer from step 6 of" in capsys.readouterr().out

    a = torch.load(whole / CHECKPOINT, weights_only=True)["state_dict"]
    b = torch.load(parts / CHECKPOINT, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["step"]) == 8 and not torch.equal(a["last_used"], torch.full_like(a["last_used"], 8))  # restarts ran
    summaries = [json.loads((o / "tokenizer.json").read_text()) for o in (whole, parts)]
    for s in summaries:
        del s["seconds"], s["checkpoint"], s["reconstructions"]
    assert summaries[0] == summaries[1]  # the loss history too: its first step and last-50 means
    assert (np.asarray(Image.open(whole / GRID)) == np.asarray(Image.open(parts / GRID))).all()


def test_train_tokenizer_refuses_to_resume_with_other_options(image_pages, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(_tiny(image_pages, out, 2)) == 0
    capsys.readouterr()
    for extra, says in ((["--lr", "0.01"], "with --lr 0.01: the run was made with --lr 0.001; pass --lr 0.001"),
                        (["--encoder", "conv"], "with --encoder conv: the run was made with --encoder patch; pass "
                                                "--encoder patch to continue it, or a new --out"),
                        (["--seed", "1"], "the run was made with --seed 0")):
        assert main(_tiny(image_pages, out, 4, *extra)) == 1
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
    assert main(_tiny(image_pages, out, 1)) == 1
    assert "--max-steps 1: its state is at step 2; pass --max-steps 2 or more" in capsys.readouterr().err
    Image.fromarray(np.zeros((224, 224), dtype=np.uint8)).save(image_pages / "page9.png")
    assert main(_tiny(image_pages, out, 4)) == 1
    assert "changed since the run began (6 pages then, 7 now" in capsys.readouterr().err


def test_train_tokenizer_encoder_flag_reaches_the_tokenizer(image_pages, tmp_path, capsys):
    out = tmp_path / "conv"
    assert main(_tiny(image_pages, out, 1, "--encoder", "conv")) == 0
    assert json.loads((out / "tokenizer.json").read_text())["encoder"] == "conv"
    assert load_tokenizer(out / CHECKPOINT).config.encoder == "conv"
    with pytest.raises(SystemExit):  # argparse's choices
        main(_tiny(image_pages, tmp_path / "x", 1, "--encoder", "pixels"))
    assert "invalid choice: 'pixels'" in capsys.readouterr().err
