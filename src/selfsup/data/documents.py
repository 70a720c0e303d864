"""Document pages as grayscale images: PDFs rendered with PDFium (PyPI `pypdfium2`), page images fitted to one size.

Every page becomes a uint8 image (1, PAGE, PAGE), PAGE = 224 (ViT-B/16's input, as in DiT: 14 x 14 patches):
- a PDF page is rendered in grayscale at the fixed resolution DPI = PAGE / 11 px per inch (20.4 dpi: a US-letter
  page's 11 in long side is exactly PAGE px; every manual of `--data doc-pages` is letter-sized, 174 x 224 px), then
  centred on a white PAGE x PAGE canvas. A page larger than letter is scaled down to fit (never up);
- a page image of any size (a scan, a photo of a page) is converted to grayscale, scaled (Lanczos) so that its
  longer side is PAGE px, keeping its aspect, and centred on white the same way (pad to square + resize).
At this size text is a texture, not legible: DiT's 224 x 224 inputs are the same.

Sources, each rendered once and cached (nothing downloads):
- `--data doc-pages`: the 9 Debian manuals of MANUALS (`bash scripts/setup.sh` unpacks them into CACHE/doc-pdfs/),
  labelled by manual (a real label), see `load_doc_pages`;
- `--data DIR` of PDFs and/or page images (`open_page_folder`): each PDF's pages cached in CACHE/doc-render-v1/
  under the hash of the file's bytes; encrypted, empty (0 pages) and corrupt PDFs are skipped and counted in one
  summary line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from selfsup.errors import SelfsupError

from .cache import CACHE_ENV, cache_root, move_into_place, read_cache, save_array, write_cache
from .folder import IMAGE_EXTENSIONS, BadImageError, decode_image, walk_images
from .images import ArrayImageSet
from .split import stratified_split

log = logging.getLogger(__name__)

PAGE = 224  # px side of every page image
LETTER_LONG_SIDE_IN = 11.0
DPI = PAGE / LETTER_LONG_SIDE_IN  # px per inch at which PDF pages are rendered
WHITE = 255
PDF_EXTENSION = ".pdf"

# --data doc-pages: the manuals (file stems in CACHE/doc-pdfs) in label order, R's seven then gnuplot's and asymptote's.
MANUALS = ("R-FAQ", "R-admin", "R-data", "R-exts", "R-intro", "R-ints", "R-lang", "gnuplot", "asymptote")
PACKAGES = "Debian's r-doc-pdf, gnuplot-doc and asymptote-doc"
MAX_PAGES = 200  # pages kept per manual, evenly spaced through it (R-exts has 236, gnuplot 311)
TEST_FRACTION, SEED = 0.2, 0
SOURCE = "doc-pdfs"  # CACHE/doc-pdfs, filled by scripts/setup.sh
FOLDER = "doc-pages-v1"  # CACHE/doc-pages-v1: the rendered pages
RENDERED = "doc-render-v1"  # CACHE/doc-render-v1/<sha256>.npy: the pages of a user's PDF
MANIFEST = "manifest.json"  # written last: a folder without it is incomplete
MISSING = (f"--data doc-pages reads the PDF manuals of {PACKAGES}, not found in {{dir}}: run `bash scripts/setup.sh` "
           f"(with the same {CACHE_ENV}) to fetch them, or pass doc-pages:DIR with a folder holding "
           f"{', '.join(m + '.pdf' for m in MANUALS)}")


class PdfProblem(SelfsupError):
    """A PDF that cannot be rendered; `reason` is 'encrypted', 'empty' or 'corrupt', `path` the file."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        advice = {"encrypted": "it needs a password; pass a decrypted copy (e.g. `qpdf --decrypt`)",
                  "empty": "it has no pages; pass a PDF with pages",
                  "corrupt": "it is not a readable PDF; pass an intact copy"}[reason]
        super().__init__(f"cannot render '{path}' ({reason}{': ' + detail if detail else ''}): {advice}")
        self.path, self.reason = str(path), reason


def fit_page(image: Image.Image, enlarge: bool = True) -> np.ndarray:
    """uint8 (PAGE, PAGE): `image` in grayscale, scaled (Lanczos) so that its longer side is PAGE px (only ever down
    when `enlarge` is False), centred on white. Transparent parts count as white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (WHITE, WHITE, WHITE, 255))
        image = Image.alpha_composite(paper, rgba)
    gray = image.convert("L")
    w, h = gray.size
    scale = PAGE / max(w, h)
    if scale < 1 or (enlarge and scale > 1):
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        gray = gray.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (PAGE, PAGE), WHITE)
    canvas.paste(gray, ((PAGE - w) // 2, (PAGE - h) // 2))
    return np.asarray(canvas)


def pdf_problem(path: str | os.PathLike) -> PdfProblem:
    """Why PDFium refused `path`, told apart with pypdf (PDFium gives a 0-page file the same error code as a password
    one): a PdfProblem with reason 'encrypted', 'empty' or 'corrupt'."""
    import pypdf

    quiet = logging.getLogger("pypdf")  # its warnings ("EOF marker not found") would be lines beside ours
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            return PdfProblem(path, "encrypted")
        if len(reader.pages) == 0:
            return PdfProblem(path, "empty")
    except Exception as e:  # whatever pypdf raises, the file is what is wrong
        return PdfProblem(path, "corrupt", " ".join(str(e).split())[:120] or type(e).__name__)
    finally:
        quiet.setLevel(level)
    return PdfProblem(path, "corrupt", "PDFium cannot open it")


def page_indices(n_pages: int, max_pages: int | None) -> list[int]:
    """0-based indices of the pages kept: all of them, or `max_pages` evenly spaced from the first to the last."""
    if max_pages is None or n_pages <= max_pages:
        return list(range(n_pages))
    return sorted(set(np.linspace(0, n_pages - 1, max_pages).round().astype(int).tolist()))


def render_pdf(path: str | os.PathLike, max_pages: int | None = None, progress: bool = False
               ) -> tuple[np.ndarray, list[int]]:
    """(uint8 (n, PAGE, PAGE) pages, their 0-based page numbers) of the PDF at `path`, rendered at DPI in grayscale
    (see the module docstring); `max_pages` evenly spaced pages when it has more.

    Raises PdfProblem (a SelfsupError) for an encrypted (password), empty (0 pages) or corrupt PDF.
    """
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(os.fspath(path))
    except pdfium.PdfiumError:
        raise pdf_problem(path) from None
    try:
        if len(document) == 0:
            raise PdfProblem(path, "empty")
        chosen = page_indices(len(document), max_pages)
        pages = np.empty((len(chosen), PAGE, PAGE), dtype=np.uint8)
        bar = tqdm(chosen, desc=f"rendering {Path(path).name}", unit="page", leave=False,
                   disable=None if progress else True)
        for k, i in enumerate(bar):
            page = document[i]
            try:
                width, height = page.get_size()  # points (1/72 in)
                scale = min(DPI / 72, PAGE / max(width, height, 1e-6))  # fixed DPI; larger than letter: fit
                bitmap = page.render(scale=scale, grayscale=True)
                pages[k] = fit_page(bitmap.to_pil(), enlarge=False)
            finally:
                page.close()
        return pages, chosen
    except pdfium.PdfiumError as e:
        raise PdfProblem(path, "corrupt", str(e)) from None
    finally:
        document.close()


# ---------------------------------------------------------------------------------------------------- --data doc-pages

class DocPageSet(ArrayImageSet):
    """`set[i]` -> (uint8 page (1, PAGE, PAGE), manual 0..8 (index into MANUALS)); pages[i]: its 0-based page number
    in that manual's PDF."""

    def __init__(self, split: str, images: torch.Tensor, meta: dict[str, list]):
        super().__init__(images, torch.tensor(meta["label"], dtype=torch.int64), name=f"doc-pages/{split}",
                         classes=list(MANUALS))
        self.pages = meta["page"]


def doc_pdf_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the manuals' PDFs: `root`, or CACHE/doc-pdfs."""
    return Path(root).expanduser() if root is not None else cache_root() / SOURCE


def load_doc_pages(split: str = "train", root: str | os.PathLike | None = None) -> DocPageSet:
    """The `split` ('train' | 'test') of the real manual pages: uint8 (N, 1, PAGE, PAGE), label = which manual.

    Up to MAX_PAGES evenly spaced pages of each manual of MANUALS (R-FAQ 52, R-admin 85, R-data 41, R-exts 200 of 236,
    R-intro 113, R-ints 81, R-lang 69, gnuplot 200 of 311, asymptote 196: 1,037 pages), split by page: a stratified
    split seeded by SEED puts round(TEST_FRACTION * n) of each manual's n pages in test (830 train / 207 test). Pages
    of one manual are on both sides, so "which manual" probes provenance (typography, layout, figures), not
    generalisation to an unseen manual. `--test-fraction` and `--seed` do not change it: it is the set's one split.
    Rendered once (about 2 s on one core) into CACHE/doc-pages-v1 (train.npy, test.npy, manifest.json), then read
    from there; a changed PDF renders again. Raises SelfsupError when a PDF is missing or cannot be rendered.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}' of doc-pages: pass 'train' or 'test'")
    folder = doc_pdf_dir(root)
    key = _doc_pages_recipe(folder, explicit=root is not None)
    cached = cache_root() / FOLDER
    loaded = load_arrays(cached, key, split)
    if loaded is not None:
        return DocPageSet(split, *loaded)
    arrays, meta = _build_doc_pages(folder)
    save_arrays(cached, key, arrays, meta, "the rendered manual pages")
    return DocPageSet(split, torch.from_numpy(arrays[split]), meta[split])


def _doc_pages_recipe(folder: Path, explicit: bool) -> str:
    stats = {}
    for manual in MANUALS:
        try:
            stat = os.stat(folder / f"{manual}.pdf")
        except OSError:
            if explicit:
                raise SelfsupError(f"'{folder}' has no {manual}.pdf: doc-pages:DIR needs the PDFs "
                                   f"{', '.join(m + '.pdf' for m in MANUALS)} of {PACKAGES}") from None
            raise SelfsupError(MISSING.format(dir=folder)) from None
        stats[manual] = [stat.st_size, stat.st_mtime_ns]
    return json.dumps({"folder": os.path.realpath(folder), "stats": stats, "page": PAGE, "dpi": DPI,
                       "max_pages": MAX_PAGES, "test": TEST_FRACTION, "seed": SEED})


def _build_doc_pages(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, list]]]:
    pages, labels, numbers = [], [], []
    for label, manual in enumerate(tqdm(MANUALS, desc="rendering doc-pages (once)", unit="manual", disable=None)):
        rendered, chosen = render_pdf(folder / f"{manual}.pdf", MAX_PAGES)
        pages.append(rendered)
        labels += [label] * len(chosen)
        numbers += chosen
    images = np.concatenate(pages)[:, None]  # (N, 1, PAGE, PAGE)
    labels_array = np.array(labels)
    train, test = stratified_split(labels_array, TEST_FRACTION, SEED, list(MANUALS))
    arrays, meta = {}, {}
    for split, chosen in (("train", train), ("test", test)):
        arrays[split] = np.ascontiguousarray(images[chosen])
        meta[split] = {"label": labels_array[chosen].tolist(), "page": [numbers[i] for i in chosen]}
    return arrays, meta


# ------------------------------------------------------------------------------------------------- cached array folders

def load_arrays(root: Path, key: str, split: str) -> tuple[torch.Tensor, dict] | None:
    """(images of `split`, its manifest entry) from a folder `save_arrays` wrote for `key`, or None when it is missing,
    incomplete, written for another key or unreadable."""
    data = read_cache(root / MANIFEST, key)
    if data is None or split not in data.get("meta", {}):
        return None
    try:
        return torch.from_numpy(np.load(root / f"{split}.npy")), data["meta"][split]
    except (OSError, ValueError):
        return None


def save_arrays(root: Path, key: str, arrays: dict[str, np.ndarray], meta: dict, what: str,
                extra: dict[str, object] | None = None) -> None:
    """Write `arrays` ({split: array} as split.npy), `extra` ({file name: JSON-able}) and the manifest (key, meta) into
    `root` through a temporary folder renamed into place after the manifest is written; a cache that cannot be
    written is a warning (the next load builds it again), never an error."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".tmp"))
    except OSError as e:
        log.warning("cannot cache %s in %s (%s): set %s to a writable folder", what, root, e.strerror, CACHE_ENV)
        return
    try:
        for split, array in arrays.items():
            with open(temp / f"{split}.npy", "wb") as f:
                np.save(f, array)
        for name, value in (extra or {}).items():
            with open(temp / name, "w", encoding="utf-8") as f:
                json.dump(value, f, separators=(",", ":"))
        write_cache(temp / MANIFEST, key, {"meta": meta})
        if (temp / MANIFEST).is_file():
            move_into_place(temp, root)
    except OSError as e:
        log.warning("cannot cache %s in %s (%s): set %s to a writable folder", what, root, e.strerror, CACHE_ENV)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ --data DIR

@dataclass
class FolderReport:
    """What `open_page_folder` found: pages read, and the files skipped (path, reason) or resized."""

    pdfs: int = 0
    images: int = 0
    pages: int = 0
    resized: int = 0  # page images of another size than PAGE x PAGE, fitted (scaled, padded white)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, 'encrypted PDF' | ... | 'bad image')

    def summary(self, name: str) -> str:
        """One line: pages read, files skipped by reason (with up to 3 names each), images fitted."""
        line = f"'{name}': {self.pages} pages from {self.pdfs} PDFs and {self.images} page images"
        if self.resized:
            line += (f"; {self.resized} page image{'s' if self.resized > 1 else ''} not {PAGE}x{PAGE} px fitted to it "
                     "(scaled, padded with white)")
        if self.skipped:
            reasons: dict[str, list[str]] = {}
            for path, reason in self.skipped:
                reasons.setdefault(reason, []).append(os.path.basename(path))
            parts = [f"{len(v)} {k}{'s' if len(v) > 1 else ''} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                     for k, v in reasons.items()]
            line += f"; skipped {len(self.skipped)} files: {', '.join(parts)}"
        return line


def open_page_folder(root: str | os.PathLike, progress: bool = True) -> ArrayImageSet:
    """Every page under the folder `root` (any depth; hidden entries skipped): each page of each PDF and each page
    image, uint8 (N, 1, PAGE, PAGE), labels -1, in path order (a PDF's pages in order).

    PDFs render once into CACHE/doc-render-v1/<sha256 of the file>.npy. Encrypted, empty and corrupt PDFs and
    undecodable images are skipped; what was read and skipped is one line on stderr (`selfsup: warning: ...`) when
    anything was skipped or resized. Raises SelfsupError when the folder holds no usable page (naming what was
    skipped and what to pass).
    """
    name = os.fspath(root)
    folder = os.path.expanduser(name)
    if not os.path.isdir(folder):
        raise SelfsupError(f"'{name}' is not an existing folder: pass a folder of PDFs or page images")
    paths, _ = walk_images(folder, frozenset((*IMAGE_EXTENSIONS, PDF_EXTENSION)))
    report, pages = FolderReport(), []
    for path in tqdm(paths, desc=f"reading {name}", unit="file",
                     disable=None if progress and len(paths) >= 20 else True):
        if path.lower().endswith(PDF_EXTENSION):
            try:
                pages.append(cached_pdf_pages(path))
                report.pdfs += 1
            except PdfProblem as e:
                report.skipped.append((path, f"{e.reason} PDF"))
            continue
        try:
            rgb = decode_image(path)  # (3, H, W)
        except BadImageError:
            report.skipped.append((path, "bad image"))
            continue
        report.images += 1
        report.resized += tuple(rgb.shape[1:]) != (PAGE, PAGE)
        pages.append(fit_page(Image.fromarray(rgb.permute(1, 2, 0).numpy()))[None])
    report.pages = sum(len(p) for p in pages)
    if not report.pages:
        skipped = report.summary(name).partition("; skipped ")[2]
        found = f"skipped {skipped}" if skipped else "no PDF or image files"
        raise SelfsupError(f"'{name}' holds no usable page ({found}): pass a folder of PDFs or page images "
                           f"({PDF_EXTENSION} {' '.join(IMAGE_EXTENSIONS)})")
    if report.skipped or report.resized:
        print(f"selfsup: warning: {report.summary(name)}", file=sys.stderr)
    images = torch.from_numpy(np.concatenate(pages)[:, None])  # (N, 1, PAGE, PAGE)
    result = ArrayImageSet(images, name=name)
    result.report = report  # type: ignore[attr-defined]  # what was read and skipped, for callers that print it
    return result


def holds_pdfs(root: str | os.PathLike) -> bool:
    """Whether any non-hidden file under `root` (any depth) is named *.pdf."""
    return bool(walk_images(os.fspath(root), frozenset((PDF_EXTENSION,)))[0])


def cached_pdf_pages(path: str | os.PathLike) -> np.ndarray:
    """uint8 (n, PAGE, PAGE): every page of the PDF at `path`, rendered once and cached under the hash of its bytes
    (a renamed or copied file is not rendered again). Raises PdfProblem as render_pdf."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    cached = cache_root() / RENDERED / f"{digest[:40]}-{PAGE}.npy"
    try:
        return np.load(cached)
    except (OSError, ValueError):
        pass
    pages, _ = render_pdf(path, progress=True)
    save_array(cached, pages, f"the pages of {path}")
    return pages
