"""Generated document pages (--data doc-genres): ten genres, seeded, with layout boxes inside the page."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from selfsup.data import doc_genres
from selfsup.data.doc_genres import GENRES, KINDS, draw_page, generate, load_doc_genres
from selfsup.data.documents import PAGE
from selfsup.errors import SelfsupError


@pytest.fixture
def photos(tmp_path):
    """Two photo files standing in for opencv-doc's: random grey textures."""
    rng = np.random.default_rng(0)
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"photo{k}.png")
        Image.fromarray(rng.integers(0, 256, (120, 160), dtype=np.uint8)).save(paths[-1])
    return paths


def test_every_genre_draws_a_page_with_boxes_inside_it(photos):
    images, meta, boxes = generate("train", 2, photos)
    assert images.shape == (20, 1, PAGE, PAGE) and images.dtype == np.uint8
    assert meta["label"] == [g for g in range(10) for _ in range(2)]
    for page, layout in zip(images[:, 0], boxes):
        assert layout and page.min() < 170 and np.median(page) > 200  # ink on mostly white paper
        for item in layout:
            x0, y0, x1, y1 = item["box"]
            assert item["kind"] in KINDS and 0 <= x0 < x1 <= PAGE and 0 <= y0 < y1 <= PAGE
    kinds = {item["kind"] for layout in boxes for item in layout}
    assert kinds == set(KINDS)
    figures = [item["box"] for layout in boxes for item in layout if item["kind"] == "figure"]
    assert figures  # papers, news and slides carry photos


def test_boxes_hold_the_ink_they_name(photos):
    """Ink inside a text or title box, paper far outside every box: the boxes are where the drawing went (genres
    without unboxed rules or signatures)."""
    rng = np.random.default_rng([0, 1])
    grays = [Image.open(p).convert("L") for p in photos]
    for genre in ("list", "specification", "paper", "invoice"):
        page, layout = draw_page(genre, rng, grays)
        covered = np.zeros_like(page, dtype=bool)
        for item in layout:
            x0, y0, x1, y1 = (int(round(v)) for v in item["box"])
            covered[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True
        paper = page[~covered]  # outside the boxes: paper and noise, no text
        assert paper.min() > 170 and np.median(paper) > 225
        for item in layout:
            x0, y0, x1, y1 = (int(round(v)) for v in item["box"])
            if item["kind"] in ("text", "title"):
                assert page[y0:y1 + 1, x0:x1 + 1].min() < paper.min() - 10


def test_generation_is_seeded(photos):
    a = generate("test", 1, photos, genres=("letter", "news"))
    b = generate("test", 1, photos, genres=("letter", "news"))
    c = generate("train", 1, photos, genres=("letter", "news"))
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    assert not np.array_equal(a[0], c[0])
    assert a[1]["label"] == [GENRES.index("letter"), GENRES.index("news")]


def test_slides_are_landscape(photos):
    page, _ = draw_page("slide", np.random.default_rng(0), [Image.open(photos[0]).convert("L")])
    rows = np.flatnonzero((page < 200).any(1))
    assert rows.min() >= (PAGE - PAGE * 3 // 4) // 2 - 4  # a 224 x 168 sheet centred: white bands above and below


def test_load_doc_genres_caches_split_and_boxes(photos, tmp_path, monkeypatch):
    folder = tmp_path / "opencv"
    folder.mkdir()
    monkeypatch.setattr(doc_genres, "N_TRAIN", 2)
    monkeypatch.setattr(doc_genres, "N_TEST", 1)
    from selfsup.data.scenes import OPENCV

    for split in ("train", "test"):
        Image.open(photos[0]).save(folder / OPENCV[split][0])
    train = load_doc_genres("train", folder)
    test = load_doc_genres("test", folder)
    assert (len(train), len(test)) == (20, 10) and train.classes == list(GENRES) and len(test.boxes) == 10
    monkeypatch.setattr(doc_genres, "generate", lambda *a, **k: pytest.fail("generated again"))
    again = load_doc_genres("test", folder)
    assert np.array_equal(again.images, test.images) and again.boxes == test.boxes


def test_missing_photos_name_setup(tmp_path):
    with pytest.raises(SelfsupError, match="scripts/setup.sh"):
        load_doc_genres("train")  # the test's empty cache has no opencv-doc
    with pytest.raises(SelfsupError, match="lacks opencv-doc's photos"):
        load_doc_genres("train", tmp_path)
