import io
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from selfsup.data import ArrayImageSet, BadImageError, FolderImageSet, decode_image, index_images, open_unlabeled
from selfsup.errors import SelfsupError


def test_index_walks_nesting_and_skips_hidden_and_non_images(tmp_path, make_image):
    for rel in ["a.png", "sub/b.JPG", "sub/deeper/still/c.tiff", "z/d.webp"]:
        make_image(tmp_path / rel, fmt="PNG")  # the content does not matter to the index
    for rel in [".hidden.png", ".cache/e.png", "sub/.git/f.jpg", "notes.txt", "sub/README", "sub/model.pt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "sub" / "deeper" / "loop").symlink_to(tmp_path / "sub")  # a cycle must not hang the walk
    expected = sorted(str(tmp_path / rel) for rel in ["a.png", "sub/b.JPG", "sub/deeper/still/c.tiff", "z/d.webp"])
    assert index_images(str(tmp_path)) == expected


def test_two_thousand_files(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(buffer, "PNG")
    for i in range(2000):
        folder = tmp_path / f"part{i % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(buffer.getvalue())
    images = open_unlabeled(str(tmp_path))
    assert len(images) == 2000 and images.classes is None and images.native_size is None
    assert images.labels.eq(-1).all() and images.channels == 3
    image, label = images[1999]
    assert label == -1 and image.shape == (3, 2, 3) and image[:, 0, 0].tolist() == [10, 20, 30]


def png_16bit(path, values, mode_dtype="<u2", fmt="PNG"):
    Image.fromarray(np.array([values], dtype=mode_dtype)).save(path, fmt)


# The mode PIL opens each file of the next test in: each conversion path is really taken.
MODES = {
    "gray.png": "L", "gray-alpha.png": "LA", "rgba.png": "RGBA", "one-bit.png": "1", "one-bit.pbm": "1",
    "cmyk.tif": "CMYK", "cmyk.jpg": "CMYK", "rgb.bmp": "RGB", "rgb.ppm": "RGB", "rgb.webp": "RGB",
    "palette.gif": "P", "palette-transparent.png": "P", "sixteen.png": "I;16", "sixteen-be.tif": "I;16B", "int32.tif": "I",
}


@pytest.mark.parametrize(
    "name, write, pixel",
    [
        ("gray.png", lambda p: Image.new("L", (5, 4), 77).save(p), (77, 77, 77)),
        ("gray-alpha.png", lambda p: Image.new("LA", (5, 4), (77, 10)).save(p), (77, 77, 77)),
        ("rgba.png", lambda p: Image.new("RGBA", (5, 4), (1, 2, 3, 0)).save(p), (1, 2, 3)),
        ("one-bit.png", lambda p: Image.new("1", (5, 4), 1).save(p), (255, 255, 255)),
        ("one-bit.pbm", lambda p: Image.new("1", (5, 4), 0).save(p), (0, 0, 0)),
        ("cmyk.tif", lambda p: Image.new("CMYK", (5, 4), (0, 255, 0, 0)).save(p), (255, 0, 255)),
        ("cmyk.jpg", lambda p: Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(p, quality=100), (255, 255, 255)),
        ("rgb.bmp", lambda p: Image.new("RGB", (5, 4), (9, 99, 199)).save(p), (9, 99, 199)),
        ("rgb.ppm", lambda p: Image.new("RGB", (5, 4), (9, 99, 199)).save(p), (9, 99, 199)),
        ("rgb.webp", lambda p: Image.new("RGB", (5, 4), (9, 99, 199)).save(p, lossless=True), (9, 99, 199)),
        ("palette.gif", lambda p: palette((200, 0, 0)).save(p), (200, 0, 0)),
        ("palette-transparent.png", lambda p: palette((0, 0, 255)).save(p, transparency=b"\x00\x80"), (0, 0, 255)),
        ("sixteen.png", lambda p: png_16bit(p, [65535, 32768, 0, 256, 255]), (255, 255, 255)),
        ("sixteen-be.tif", lambda p: png_16bit(p, [65535, 32768, 0, 256, 255], ">u2", "TIFF"), (255, 255, 255)),
        ("int32.tif", lambda p: png_16bit(p, [65535, 32768, 0, 256, 255], "<i4", "TIFF"), (255, 255, 255)),
    ],
)
def test_every_mode_becomes_rgb_uint8(tmp_path, name, write, pixel):
    path = tmp_path / name
    write(str(path))
    with Image.open(path) as opened:
        assert opened.mode == MODES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PIL's palette-transparency warning must not fire
        image = decode_image(str(path))
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and image.is_contiguous()
    assert image[:, 0, 0].tolist() == list(pixel)


@pytest.mark.parametrize("fmt, dtype", [("PNG", "<u2"), ("TIFF", ">u2"), ("TIFF", "<i4")])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path, fmt, dtype):
    path = tmp_path / f"deep.{fmt.lower()}"
    png_16bit(path, [65535, 32768, 0, 256, 255, 40000], dtype, fmt)
    image = decode_image(str(path))
    assert image.shape == (3, 1, 6)
    assert image[0, 0].tolist() == [255, 128, 0, 1, 0, 156] and torch.equal(image[0], image[2])


def test_sixteen_bit_pgm(tmp_path):
    path = tmp_path / "deep.pgm"
    path.write_bytes(b"P5\n3 1\n65535\n" + np.array([65535, 32768, 0], ">u2").tobytes())
    assert decode_image(str(path))[1, 0].tolist() == [255, 128, 0]


def palette(color):
    """A palette image whose every pixel is entry 1 = `color` (entry 0 is black)."""
    image = Image.new("P", (5, 4), 1)
    image.putpalette([0, 0, 0, *color] + [0] * 762)
    return image


def test_jpeg_draft_decodes_smaller(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (64, 48), (120, 60, 30)).save(path, quality=95)
    assert decode_image(str(path)).shape == (3, 48, 64)
    small = FolderImageSet([str(path)], draft_size=12)[0][0]
    assert small.shape == (3, 12, 16)  # 1/4 scale: the largest that keeps both sides >= 12
    assert (small[:, 5, 5].int() - torch.tensor([120, 60, 30])).abs().max() <= 3


def truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.mark.parametrize(
    "name, write",
    [
        ("empty.png", lambda p: p.write_bytes(b"")),
        ("garbage.jpg", lambda p: p.write_bytes(os.urandom(300))),
        ("text.png", lambda p: p.write_text("this is not an image\n")),
        ("truncated.png", truncated_png),
        ("truncated.jpg", truncated_jpeg),
    ],
)
def test_bad_files_raise_bad_image_error_naming_the_file(tmp_path, name, write):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    path = tmp_path / "in a folder" / name
    path.parent.mkdir()
    write(path)
    images = open_unlabeled(str(tmp_path))
    with pytest.raises(BadImageError) as e:
        images[0]
    message = str(e.value)
    assert isinstance(e.value, SelfsupError)
    assert message.startswith(f"cannot decode image '{path}': ") and message.endswith("; remove or fix the file")
    assert "\n" not in message


def test_folder_set_with_labels_and_mismatch(tmp_path, make_image):
    paths = [str(make_image(tmp_path / f"{i}.png", value=i * 10)) for i in range(3)]
    images = FolderImageSet(paths, [2, 0, 1], ["a", "b", "c"], name="three")
    assert len(images) == 3 and images[2][1] == 1 and int(images[2][0][0, 0, 0]) == 20
    assert "three" in repr(images)
    with pytest.raises(SelfsupError, match="one label per path"):
        FolderImageSet(paths, [0, 1])


def test_array_image_set_checks_its_input():
    images = torch.zeros(4, 3, 6, 5, dtype=torch.uint8)
    array_set = ArrayImageSet(images, torch.tensor([0, 1, 0, 1]), classes=["x", "y"])
    assert array_set[3][1] == 1 and array_set.native_size is None and array_set.channels == 3
    assert ArrayImageSet(images).labels.tolist() == [-1] * 4
    with pytest.raises(SelfsupError, match=r"uint8 tensor \(N, C, H, W\)"):
        ArrayImageSet(images.float())
    with pytest.raises(SelfsupError, match=r"uint8 tensor \(N, C, H, W\)"):
        ArrayImageSet(np.zeros((4, 3, 6, 5), np.uint8))
    with pytest.raises(SelfsupError, match="one label per image"):
        ArrayImageSet(images, torch.zeros(3))
