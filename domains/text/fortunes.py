"""The target corpus of the text domain's customisation benchmark: Debian's `fortunes`.

`toolkit benchmark --domain text --finetune` trains its base on Shakespeare (or the configured
`data.source`) and adapts it to a corpus the base never saw: the fortune cookies of Debian's
`fortunes` package (about 14,000 short modern texts: quotes, jokes, definitions, computer lore,
2.5 MB). The package is fetched and unpacked without root (`apt-get download` + `dpkg -x`,
`diffusekit.core.app.debian_packages`) into the data cache, once.

    folder = prepare_fortunes(cache_root, budget=458_577, seed=0)
    # folder/train.txt (at most `budget` characters), folder/val.txt, folder/test.txt

The fortunes are shuffled (seeded), so the three splits are draws of the same distribution, then
dealt out: the test split gets up to TEST_SHARE of the budget, validation up to VAL_SHARE, and
training up to the budget itself. Fortunes with a character outside newline, tab and printable
ASCII (about 100, accents and control bytes) are dropped: they would be unknown tokens of the
character tokenizer the base and its fine-tunes share.
"""

from __future__ import annotations

import random
import shutil
import string
import tempfile
from pathlib import Path

from diffusekit.core.app import debian_packages
from diffusekit.core.errors import DataError

PACKAGE = "fortunes"
COOKIE_DIR = "usr/share/games/fortunes"  # inside the unpacked package
SKIPPED_FILES = ("ascii-art",)           # pictures drawn in characters, not text
SEPARATOR = "\n\n"                       # between fortunes in a split file
VAL_SHARE = 0.1                          # the validation split's size, a share of the budget
TEST_SHARE = 0.25                        # the test split's size, a share of the budget
SPLIT_FILES = ("test", "val", "train")   # dealt in this order; their file stems
_ALLOWED = frozenset("\n\t" + string.printable[:95])
_MARKER = ".complete"                    # written last: a folder without it is redone


def cookie_folder(cache_root: Path, download: debian_packages.Downloader | None = None) -> Path:
    """The folder of fortune cookie files of the unpacked package under `cache_root` (unpacked on
    first use; `DataError` in one line when it cannot be fetched)."""
    root = debian_packages.unpack_package(PACKAGE, cache_root, download=download)
    folder = root / COOKIE_DIR
    if not folder.is_dir():
        raise DataError(f"the unpacked {PACKAGE} package at {root} has no {COOKIE_DIR} folder")
    return folder


def read_fortunes(folder: Path) -> list[str]:
    """Every fortune of the cookie files in `folder`, file by file (sorted): the files without a
    suffix (the `.dat` indexes and the `.u8` links are skipped), split at lines holding only
    "%". Fortunes with characters outside newline, tab and printable ASCII are dropped."""
    fortunes = []
    for path in sorted(Path(folder).iterdir()):
        if path.is_symlink() or not path.is_file() or path.suffix or path.name in SKIPPED_FILES:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        for fortune in ("\n" + text).split("\n%\n"):
            fortune = fortune.strip("\n")
            if fortune.strip() and set(fortune) <= _ALLOWED:
                fortunes.append(fortune)
    if not fortunes:
        raise DataError(f"no fortune found in {folder}")
    return fortunes


def deal(fortunes: list[str], budget: int, seed: int) -> dict[str, list[str]]:
    """Shuffle `fortunes` (seeded) and deal them into test, val and train, each up to its share
    of `budget` characters (joined by SEPARATOR); a fortune too long for every split left is
    skipped. The train split holds at most `budget` characters."""
    caps = {"test": int(TEST_SHARE * budget), "val": int(VAL_SHARE * budget), "train": budget}
    order = list(fortunes)
    random.Random(seed).shuffle(order)
    out: dict[str, list[str]] = {name: [] for name in SPLIT_FILES}
    used = dict.fromkeys(SPLIT_FILES, 0)
    for fortune in order:
        for name in SPLIT_FILES:
            extra = len(fortune) + (len(SEPARATOR) if out[name] else 0)
            if used[name] + extra <= caps[name]:
                out[name].append(fortune)
                used[name] += extra
                break
    empty = [name for name in SPLIT_FILES if not out[name]]
    if empty:
        raise DataError(f"a budget of {budget} characters leaves the {empty[0]} split of the "
                        "fortunes target empty (the base's training text is too small)")
    return out


def prepare_fortunes(cache_root: Path, budget: int, seed: int = 0,
                     download: debian_packages.Downloader | None = None) -> Path:
    """The folder `cache_root/text/fortunes-<budget>-<seed>/` holding train.txt (at most `budget`
    characters), val.txt and test.txt (see the module docstring), written once: a finished
    folder is returned untouched, so its files keep their times and the prepared token cache
    that depends on them stays valid."""
    cache_root = Path(cache_root).expanduser()
    folder = cache_root / "text" / f"fortunes-{int(budget)}-{int(seed)}"
    if (folder / _MARKER).is_file():
        return folder
    # the split text loses its last newline to strip_gutenberg and gains one: budget - 1 keeps
    # the prepared training text itself within `budget` characters
    splits = deal(read_fortunes(cookie_folder(cache_root / "text", download)), budget - 1, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        staged = Path(tmp) / "out"
        staged.mkdir()
        for name, parts in splits.items():
            (staged / f"{name}.txt").write_text(SEPARATOR.join(parts))
        (staged / _MARKER).write_text(f"{len(splits['train'])} training fortunes\n")
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished earlier attempt (no marker)
        staged.rename(folder)
    return folder
