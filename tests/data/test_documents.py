"""Document pages: PDF rendering, fitting page images, the doc-pages built-in and folders of PDFs with bad files.

Every PDF here is written by the test (PIL writes image PDFs, pypdf empty and encrypted ones), so nothing depends on
the Debian manuals that `scripts/setup.sh` fetches."""

from __future__ import annotations

import numpy as np
import pypdf
import pytest
from PIL import Image

from selfsup.data import documents as docs
from selfsup.data import open_labeled, open_unlabeled
from selfsup.data.documents import (
    MANUALS,
    PAGE,
    PdfProblem,
    fit_page,
    load_doc_pages,
    open_page_folder,
    page_indices,
    pdf_problem,
    render_pdf,
)
from selfsup.errors import SelfsupError


def letter_page(mark: int = 0) -> Image.Image:
    """A US-letter page at 72 px per inch (612 x 792 px = points): white, a black block in its top-left quarter, and
    `mark` grey bars at the bottom so pages can be told apart after rendering."""
    page = Image.new("L", (612, 792), 255)
    page.paste(0, (0, 0, 306, 396))
    for k in range(mark):
        page.paste(128, (40 + 60 * k, 700, 80 + 60 * k, 760))
    return page


def write_pdf(path, n_pages: int = 2) -> None:
    pages = [letter_page(k) for k in range(n_pages)]
    pages[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=pages[1:])


def write_encrypted(path) -> None:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(path)


def write_empty(path) -> None:
    pypdf.PdfWriter().write(path)  # a valid PDF whose page tree has no pages


def test_render_pdf_at_fixed_dpi_centred_on_white(tmp_path):
    write_pdf(tmp_path / "a.pdf", 3)
    pages, numbers = render_pdf(tmp_path / "a.pdf")
    assert pages.shape == (3, PAGE, PAGE) and pages.dtype == np.uint8 and numbers == [0, 1, 2]
    # letter at DPI = PAGE / 11: 8.5 in -> 173 px wide, centred: 25 white columns on the left, 26 on the right
    width = round(8.5 * docs.DPI)
    left = (PAGE - width) // 2
    assert (pages[:, :, :left - 1] == 255).all() and (pages[:, :, left + width + 1:] == 255).all()
    # the black block is the page's top-left quarter: dark there, white in the top-right quarter
    assert pages[0, 10:100, left + 10:left + 80].mean() < 10
    assert pages[0, 10:100, left + width - 60:left + width - 10].mean() > 245
    # pages stay in order: page k has k grey bars near its bottom
    bars = [(p[205:215, left:left + width] < 200).sum() for p in pages]
    assert bars[0] == 0 < bars[1] < bars[2]


def test_render_pdf_keeps_evenly_spaced_pages(tmp_path):
    write_pdf(tmp_path / "a.pdf", 5)
    pages, numbers = render_pdf(tmp_path / "a.pdf", max_pages=3)
    assert numbers == [0, 2, 4] and len(pages) == 3
    assert page_indices(311, 200)[:3] == [0, 2, 3] and page_indices(311, 200)[-1] == 310
    assert len(page_indices(311, 200)) == 200 and page_indices(41, 200) == list(range(41))


@pytest.mark.parametrize("writer, reason", [(write_encrypted, "encrypted"), (write_empty, "empty"),
                                            (lambda p: p.write_bytes(b"%PDF-1.4 not really" * 20), "corrupt"),
                                            (lambda p: p.write_bytes(b""), "corrupt")])
def test_bad_pdfs_raise_one_line_naming_the_problem(tmp_path, writer, reason):
    path = tmp_path / "bad.pdf"
    writer(path)
    with pytest.raises(PdfProblem) as caught:
        render_pdf(path)
    assert caught.value.reason == reason and "\n" not in str(caught.value)
    assert str(path) in str(caught.value) and "pass" in str(caught.value)
    assert pdf_problem(path).reason == reason


def test_truncated_pdf_is_corrupt(tmp_path):
    write_pdf(tmp_path / "a.pdf", 2)
    data = (tmp_path / "a.pdf").read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) // 3])
    with pytest.raises(PdfProblem) as caught:
        render_pdf(tmp_path / "cut.pdf")
    assert caught.value.reason == "corrupt"


def test_fit_page_pads_to_square_and_resizes():
    wide = Image.new("L", (100, 50), 0)  # landscape, smaller than PAGE: enlarged to 224 x 112, centred vertically
    page = fit_page(wide)
    assert page.shape == (PAGE, PAGE)
    assert (page[:55] == 255).all() and (page[-55:] == 255).all() and (page[57:-57] == 0).all()
    assert (fit_page(wide, enlarge=False)[:, :62] == 255).all()  # not enlarged: 100 x 50 in the middle
    rgba = Image.new("RGBA", (224, 224), (0, 0, 0, 0))  # transparent = paper
    assert (fit_page(rgba) == 255).all()
    tall = Image.new("RGB", (300, 600), (0, 0, 0))
    assert (fit_page(tall)[:, :55] == 255).all() and (fit_page(tall)[:, 57:-57] == 0).all()


def test_folder_counts_bad_pdfs_in_one_line(tmp_path, capsys):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    write_pdf(folder / "good.pdf", 2)
    write_encrypted(folder / "locked.pdf")
    write_empty(folder / "empty.pdf")
    (folder / "broken.pdf").write_bytes(b"garbage")
    letter_page().resize((306, 396)).save(folder / "sub" / "scan.png")  # another size: fitted
    Image.new("L", (PAGE, PAGE), 255).save(folder / "blank.png")  # the page size already: not counted as fitted
    (folder / "notes.txt").write_text("not a page")
    pages = open_page_folder(folder, progress=False)
    assert pages.images.shape == (4, 1, PAGE, PAGE) and pages.channels == 1 and pages.native_size == PAGE
    assert (pages.labels == -1).all()
    report = pages.report
    assert (report.pdfs, report.images, report.pages, report.resized) == (1, 2, 4, 1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert "1 encrypted PDF (locked.pdf)" in line and "1 empty PDF (empty.pdf)" in line
    assert "1 corrupt PDF (broken.pdf)" in line and "skipped 3 files" in line
    assert "1 page image not 224x224 px fitted" in line
    # the fitted scan: its black quarter lands in the top-left of the page's centred area
    scan = pages.images[3, 0].numpy()  # order: blank.png, broken/empty skipped, good.pdf pages, locked skipped, sub/
    assert scan[20:100, 40:90].mean() < 20 and scan[20:100, 140:180].mean() > 240


def test_folder_without_usable_pages_is_one_clear_error(tmp_path):
    write_encrypted(tmp_path / "a.pdf")
    (tmp_path / "b.pdf").write_bytes(b"")
    with pytest.raises(SelfsupError) as caught:
        open_page_folder(tmp_path, progress=False)
    message = str(caught.value)
    assert "no usable page" in message and "1 encrypted PDF (a.pdf)" in message and "1 corrupt PDF (b.pdf)" in message
    assert "pass a folder of PDFs or page images" in message and "\n" not in message
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SelfsupError, match="no PDF or image files"):
        open_page_folder(tmp_path / "nothing", progress=False)


def test_pdf_pages_render_once_keyed_by_content(tmp_path, monkeypatch):
    write_pdf(tmp_path / "a.pdf", 2)
    first = docs.cached_pdf_pages(tmp_path / "a.pdf")
    (tmp_path / "copy.pdf").write_bytes((tmp_path / "a.pdf").read_bytes())

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(docs, "render_pdf", no_render)
    assert np.array_equal(docs.cached_pdf_pages(tmp_path / "copy.pdf"), first)  # same bytes: the cache
    write_pdf(tmp_path / "other.pdf", 3)
    with pytest.raises(AssertionError, match="rendered again"):
        docs.cached_pdf_pages(tmp_path / "other.pdf")


@pytest.fixture
def manuals(tmp_path):
    """A folder laid out as CACHE/doc-pdfs: each manual of MANUALS a 5-page PDF whose pages carry the manual's index
    in grey bars (manual k: k bars), so a page's label can be checked from its pixels."""
    folder = tmp_path / "doc-pdfs"
    folder.mkdir()
    for k, manual in enumerate(MANUALS):
        pages = [letter_page(k) for _ in range(5)]
        pages[0].save(folder / f"{manual}.pdf", "PDF", resolution=72.0, save_all=True, append_images=pages[1:])
    return folder


def test_doc_pages_split_by_page_and_labelled_by_manual(manuals):
    train, test = load_doc_pages("train", manuals), load_doc_pages("test", manuals)
    assert train.images.shape == (36, 1, PAGE, PAGE) and test.images.shape == (9, 1, PAGE, PAGE)
    assert train.classes == list(MANUALS) and train.name == "doc-pages/train"
    assert np.bincount(test.labels.numpy()).tolist() == [1] * 9  # round(0.2 * 5) = 1 page of each manual
    pairs = {(int(label), page) for label, page in zip(train.labels, train.pages)}
    pairs_test = {(int(label), page) for label, page in zip(test.labels, test.pages)}
    assert not pairs & pairs_test and len(pairs | pairs_test) == 45  # every page once, on one side
    width, left = round(8.5 * docs.DPI), (PAGE - round(8.5 * docs.DPI)) // 2
    bars = (train.images[:, 0, 205:215, left:left + width] < 200).float().sum((1, 2))
    assert all((bars[train.labels == k] > 0).all() == (k > 0) for k in range(len(MANUALS)))
    # read back from the cache: the same split and pixels
    again = load_doc_pages("test", manuals)
    assert np.array_equal(again.images, test.images) and again.pages == test.pages


def test_doc_pages_plug_into_the_image_openers(manuals):
    train, test = open_labeled(f"doc-pages:{manuals}")
    assert (len(train), len(test)) == (36, 9) and train.channels == 1 and train[0][0].shape == (1, PAGE, PAGE)
    assert len(open_unlabeled(f"doc-pages:{manuals}")) == 36


def test_doc_pages_missing_manual_names_what_to_pass(manuals, tmp_path):
    (manuals / "gnuplot.pdf").unlink()
    with pytest.raises(SelfsupError, match="has no gnuplot.pdf"):
        load_doc_pages("train", manuals)
    with pytest.raises(SelfsupError, match="scripts/setup.sh"):
        load_doc_pages("train")  # the test's own empty cache has no doc-pdfs
    with pytest.raises(SelfsupError, match="pass 'train' or 'test'"):
        load_doc_pages("val", manuals)


def test_a_folder_of_pdfs_opens_for_pretraining(tmp_path):
    write_pdf(tmp_path / "a.pdf", 2)
    (tmp_path / "b.pdf").write_bytes(b"")  # counted, skipped
    pages = open_unlabeled(tmp_path)
    assert pages.images.shape == (2, 1, PAGE, PAGE) and pages.channels == 1
