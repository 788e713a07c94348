"""Pages of text: the target set of the image domain's customisation benchmark.

The base model learns x4 super-resolution from photographs (`data.sources`). Printed text is
a shift it meets only in two small scans: thin high-contrast strokes on a flat paper, whose
low resolution is a few pixels per glyph. The target set is built once per call into the data
cache ($DIFFUSEKIT_DATA/image/documents, `DOCUMENTS_FOLDER`) as PNG files, and used as a user's
folder of images (`data.folder`, split by `data.folder_holdout`, see `data.split_images`):

    rendered pages  `RENDERED` pages of `PAGE_SIZE` pixels: a heading, paragraphs of words drawn
                    from `WORDS`, on some pages a table of figures, in matplotlib's copy of the
                    DejaVu fonts (Sans, Serif, Mono; regular, bold, italic), at 13-22 pixels,
                    dark ink on a light paper of a seeded tint
    scans           scikit-image's `page` (a scanned book page) and `text` (a photo of printed
                    text). The base's `skimage` source holds both, so they go to the target's
                    training split only: the held-out pages are rendered pages the base never saw

Which file number holds which image is chosen from the folder split of `data.seed`, so that the
scans fall into the training split for any seed. The fonts are the ones matplotlib (a
dependency) ships, not the system's, so the pages are the same on every machine with the same
matplotlib and Pillow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageDraw, ImageFont

from diffusekit.core.app.config import data_cache
from diffusekit.core.errors import DataError
from diffusekit.domains.image.data import load_images, split_images

DOCUMENTS_FOLDER = "documents"
PAGE_SIZE = (320, 256)          # rendered page, H x W (HR pixels; a multiple of the scale)
TRAIN_PAGES, VAL_PAGES, TEST_PAGES = 4, 1, 3  # rendered pages per split
SCANS = ("page", "text")        # scikit-image's document images (training split only)
MAX_SHARE = 0.10                # the target's training pixels / the base's, at most
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Oblique.ttf",
         "DejaVuSerif-Italic.ttf")
HEADING_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf")
WORDS = ("the of and to in is that for it as with was on be by this are from or an at which "
         "but not have had were all their one can has more its been when there will would "
         "report data model image signal noise sample figure table section method result value "
         "measure between each first second number system process training paper document "
         "letter office account invoice total amount date page chapter volume review summary "
         "analysis question answer example reference north south river city street market "
         "quarterly revenue budget committee meeting minutes agenda approved proposal").split()


@dataclass(frozen=True)
class DocumentSet:
    """The target folder, its file names per split, the training split's pixels, and the
    `data.folder_holdout` that gives that split."""

    folder: Path
    split: dict[str, list[str]]
    train_pixels: int
    holdout: float


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def _wrap(words: list[str], font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy line breaking of `words` into lines at most `width` pixels long."""
    lines, line = [], ""
    for word in words:
        candidate = f"{line} {word}" if line else word
        if font.getlength(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = word
    return [*lines, line] if line else lines


def _sentence(rng: random.Random, n: int) -> list[str]:
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    words[-1] += rng.choice(".,;:") if rng.random() < 0.3 else "."
    return words


def render_page(seed: int, size: tuple[int, int] = PAGE_SIZE) -> np.ndarray:
    """An H x W x 3 uint8 page of text: a heading, paragraphs and (every other page on average)
    a table of figures, in a seeded choice of font, size, ink and paper."""
    rng = random.Random(seed)
    h, w = size
    paper = tuple(rng.randint(225, 255) for _ in range(3))
    ink = tuple(rng.randint(0, 70) for _ in range(3))
    image = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(image)
    margin = rng.randint(8, 16)
    y, width = margin, w - 2 * margin
    heading = _font(rng.choice(HEADING_FONTS), rng.randint(18, 24))
    for line in _wrap(_sentence(rng, rng.randint(2, 5)), heading, width):
        draw.text((margin, y), line.rstrip(".,;:"), font=heading, fill=ink)
        y += int(heading.size * 1.3)
    body = _font(rng.choice(FONTS), rng.randint(13, 20))
    leading = int(body.size * rng.uniform(1.15, 1.45))
    table_at = rng.randint(1, 3) if rng.random() < 0.5 else -1
    paragraph = 0
    while y + leading < h - margin:
        if paragraph == table_at:
            mono = _font("DejaVuSansMono.ttf", body.size)
            draw.line([(margin, y), (w - margin, y)], fill=ink, width=1)
            y += leading // 3
            for _ in range(rng.randint(3, 6)):
                if y + leading >= h - margin:
                    break
                label, count = rng.choice(WORDS)[:7], rng.randint(0, 9999)
                value = rng.uniform(0, 99)
                draw.text((margin, y), f"{label:<8}{count:>6}{value:>7.2f}", font=mono, fill=ink)
                y += leading
        else:
            sentences = rng.randint(1, 3)
            words = [w for _ in range(sentences) for w in _sentence(rng, rng.randint(5, 14))]
            indent = rng.choice((0, 2 * body.size))
            for i, line in enumerate(_wrap(words, body, width - indent)):
                if y + leading >= h - margin:
                    break
                draw.text((margin + (indent if i == 0 else 0), y), line, font=body, fill=ink)
                y += leading
        y += leading // 2
        paragraph += 1
    return np.asarray(image)


def _scan(name: str) -> np.ndarray:
    import skimage.data

    grey = getattr(skimage.data, name)()
    return np.repeat(grey[..., None], 3, axis=-1) if grey.ndim == 2 else grey[..., :3]


def _split_of(n_files: int, d: DictConfig, holdout: float) -> dict[str, list[int]]:
    """The file numbers of each split of a folder of `n_files` files numbered 00, 01, ...
    (the split depends only on their order, so on the numbers)."""
    names = [f"folder/{i:02d}" for i in range(n_files)]
    cfg = OmegaConf.merge(d, {"folder": "documents", "folder_holdout": holdout})
    return {k: [names.index(n) for n in v] for k, v in split_images(names, cfg).items()}


def build_documents(d: DictConfig, folder: Path | None = None) -> DocumentSet:
    """Write the target set into `folder` (default: the data cache's image/documents): the
    rendered pages and the scans as `NN-page-K.png` / `NN-scan-NAME.png`, the scans on numbers
    that `data.seed`'s folder split puts into training. Files of an earlier build are replaced;
    any other file there is a `DataError` (it would join the target set)."""
    folder = Path(folder) if folder is not None else data_cache("image") / DOCUMENTS_FOLDER
    n_rendered = TRAIN_PAGES + VAL_PAGES + TEST_PAGES
    n_files = n_rendered + len(SCANS)
    holdout = (VAL_PAGES + TEST_PAGES) / n_files
    split = _split_of(n_files, d, holdout)
    if (len(split["validate"]), len(split["test"])) != (VAL_PAGES, TEST_PAGES):
        raise DataError(f"the document split holds {len(split['validate'])} validation and "
                        f"{len(split['test'])} test pages, not {VAL_PAGES} and {TEST_PAGES}")
    folder.mkdir(parents=True, exist_ok=True)
    strangers = sorted(p.name for p in folder.iterdir() if not _is_ours(p.name))
    if strangers:
        raise DataError(f"the document folder {str(folder)!r} holds files it did not write "
                        f"({', '.join(strangers[:3])}); move them or remove the folder")
    for path in folder.iterdir():
        path.unlink()
    scan_numbers = split["train"][:len(SCANS)]
    names, pixel_counts, page = {}, {}, 0
    for i in range(n_files):
        if i in scan_numbers:
            scan = SCANS[scan_numbers.index(i)]
            names[i], pixels = f"{i:02d}-scan-{scan}.png", _scan(scan)
        else:
            names[i], pixels = f"{i:02d}-page-{page}.png", render_page(int(d.seed) * 1000 + page)
            page += 1
        Image.fromarray(pixels).save(folder / names[i])
        pixel_counts[i] = pixels.shape[0] * pixels.shape[1]
    files = {k: [names[i] for i in v] for k, v in split.items()}
    train_pixels = sum(pixel_counts[i] for i in split["train"])
    return DocumentSet(folder, files, train_pixels, holdout)


def _is_ours(name: str) -> bool:
    stem, _, rest = name.partition("-")
    return stem.isdigit() and len(stem) == 2 and rest.endswith(".png") and (
        rest.startswith("page-") or rest.startswith("scan-"))


def base_training_data(d: DictConfig) -> tuple[int, int]:
    """(images, pixels) of the base's training split of `d` (its sources or folder)."""
    images = load_images(d).images
    train = split_images(list(images), d)["train"]
    return len(train), sum(int(images[n].shape[-1] * images[n].shape[-2]) for n in train)


def document_target(cfg: DictConfig) -> tuple[DocumentSet, list[str]]:
    """Build the document set and return it with the `data.*` overrides that train and score on
    it; `DataError` when its training pixels exceed `MAX_SHARE` of the base's (a base trained on
    a small folder of one's own)."""
    docs = build_documents(cfg.data)
    base_images, base_pixels = base_training_data(cfg.data)
    share = docs.train_pixels / base_pixels
    if share > MAX_SHARE:
        raise DataError(f"the document target's {docs.train_pixels} training pixels are "
                        f"{100 * share:.1f}% of the base's {base_pixels} (at most "
                        f"{100 * MAX_SHARE:.0f}%): train the base on more data")
    print(f"image finetune target: {len(docs.split['train'])} training images, "
          f"{docs.train_pixels} pixels = {100 * share:.1f}% of the base's {base_images} images, "
          f"{base_pixels} pixels; {len(docs.split['test'])} held-out test pages in {docs.folder}")
    return docs, [f"data.folder={docs.folder}", f"data.folder_holdout={docs.holdout}"]
