"""Bad data never crashes a run: in a folder of corrupt, empty, truncated, non-image and huge files
beside CMYK, 16-bit, palette, RGBA and grayscale ones, the usable images are used (as RGB) and the
others skipped, counted and listed, or with --on-bad-image error the run stops naming a file."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from selfsup.cli import main
from selfsup.data import (
    BadImageError,
    FolderImageSet,
    SkipBadImages,
    decode_image,
    header_problem,
    index_images,
    scan_images,
)

TINY = ["--backbone", "resnet18", "--set", "backbone_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "--set", "proj_hidden_dim=32", "--set", "proj_dim=16", "--no-progress", "--image-size", "8"]
BAD_AT_SCAN = ("empty.png", "notes.jpg", "corrupt.png", "huge.png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): what a decoder sees first of a huge image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def write_mixed_folder(folder: Path) -> dict[str, str]:
    """Every kind of file the issue names; returns name -> 'good' | 'scan' (refused from its header) | 'late'."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (9, 11))).astype(np.uint16)).save(folder / "sixteen.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 255, (10, 10, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(rgb).convert("LA").save(folder / "gray_alpha.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("these are not pixels")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    (folder / "huge.png").write_bytes(png_header_only(20000, 20000))
    whole = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    kinds = {p.name: "good" for p in folder.iterdir()}
    kinds.update({name: "scan" for name in BAD_AT_SCAN}, **{"truncated.png": "late"})
    return kinds


def test_every_usable_kind_decodes_to_rgb_and_the_others_name_their_file(tmp_path):
    kinds = write_mixed_folder(tmp_path / "mixed")
    for name, kind in kinds.items():
        path = str(tmp_path / "mixed" / name)
        if kind == "good":
            image = decode_image(path)
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3, name
        else:
            with pytest.raises(BadImageError, match=name) as error:
                decode_image(path)
            assert error.value.path == path and error.value.reason


def test_the_scan_reads_headers_only_and_refuses_what_they_rule_out(tmp_path, monkeypatch):
    kinds = write_mixed_folder(tmp_path / "mixed")
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.filename))
    good, bad = scan_images(index_images(str(tmp_path / "mixed")))
    assert decoded == []  # no pixel data read: a folder larger than memory is indexed, then streamed
    assert sorted(Path(p).name for p, _ in bad) == sorted(BAD_AT_SCAN)
    assert "400000000 pixels" in {Path(p).name: why for p, why in bad}["huge.png"]
    assert sorted(Path(p).name for p in good) == sorted(n for n, k in kinds.items() if k != "scan")


def test_a_folder_set_decodes_one_file_per_item(tmp_path, monkeypatch):
    write_mixed_folder(tmp_path / "mixed")
    images = FolderImageSet([str(tmp_path / "mixed" / n) for n in ("rgb.png", "gray.png", "rgba.png")])
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    images[1]
    assert opened == [str(tmp_path / "mixed" / "gray.png")]


def test_a_file_failing_late_is_replaced_by_the_next_and_logged_once(tmp_path):
    write_mixed_folder(tmp_path / "mixed")
    names = ["rgb.png", "truncated.png", "gray.png"]
    log_file = tmp_path / "bad.txt"
    images = SkipBadImages(FolderImageSet([str(tmp_path / "mixed" / n) for n in names]), log_file)
    assert torch.equal(images[1][0], decode_image(str(tmp_path / "mixed" / "gray.png")))
    images[1]
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "mixed" / "truncated.png") + "\t")


@pytest.mark.slow
def test_a_run_on_a_messy_folder_skips_and_lists_the_bad_files(tmp_path, capsys):
    kinds = write_mixed_folder(tmp_path / "mixed")
    usable = sum(k != "scan" for k in kinds.values())  # the truncated file is found only when decoded
    code = main(["train", "simclr", "--data", str(tmp_path / "mixed"), "--batch-size", str(usable),
                 "--max-steps", "2", "--num-workers", "1", "--out", str(tmp_path / "run"), *TINY])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{usable} images from" in out and f"({len(BAD_AT_SCAN)} unusable files skipped" in out
    listed = (tmp_path / "run" / "bad_images.txt").read_text()
    assert {Path(line.split("\t")[0]).name for line in listed.splitlines()} == {*BAD_AT_SCAN, "truncated.png"}
    assert f"; {len(BAD_AT_SCAN) + 1} image files skipped, listed in" in out


def test_on_bad_image_error_stops_naming_a_file(tmp_path, capsys):
    write_mixed_folder(tmp_path / "mixed")
    code = main(["train", "simclr", "--data", str(tmp_path / "mixed"), "--on-bad-image", "error",
                 "--max-steps", "1", "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 1 and f"{len(BAD_AT_SCAN)} of 12 image files cannot be used, e.g. '" in err
    assert "--on-bad-image skip" in err and not (tmp_path / "run" / "checkpoints").exists()


def test_on_bad_image_takes_skip_or_error(tmp_path, capsys):
    code = main(["train", "simclr", "--data", "digits", "--on-bad-image", "ignore", "--out", str(tmp_path / "r")])
    assert code == 1 and "option on_bad_image must be skip or error, got 'ignore'" in capsys.readouterr().err


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    # 100 M pixels: above MAX_PIXELS, below the 2x where PIL itself refuses (it only warns here)
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(10000, 10000))
    assert "pixels" in header_problem(str(path))
    with pytest.raises(BadImageError, match="big.png"):
        decode_image(str(path))
