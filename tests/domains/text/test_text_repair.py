"""The text domain's infilling through `toolkit inpaint` (the same command shape as the Gaussian
domains): [MASK] marks and --span ranges of a text file, the kept characters exact, bad input as
one line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from text_settings import TINY

RULE = "\n" + "=" * 72 + "\n"


@pytest.fixture
def run(toolkit, corpus, tmp_path) -> Path:
    code, _, err = toolkit("train", "--domain", "text", *TINY, f"data.source={corpus}",
                           "trainer.max_steps=2", "val_every=2", "checkpoint_every=2",
                           "sample.val_n=0")
    assert code == 0, err
    (folder,) = [p for p in (tmp_path / "runs" / "text").iterdir() if p.is_dir()]
    return folder


def test_infill_marks_and_spans_keep_the_rest(toolkit, run, tmp_path):
    (tmp_path / "sonnet.txt").write_text("Let me [MASK] true\nAdmit it")
    code, out, err = toolkit("inpaint", "--run", str(run), "sonnet.txt", "--span", "19-24",
                             "-n", "2", "--steps", "4", "--out", "out", "repair.mask_tokens=5")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sonnet-infilled.md",
                                                                    "sonnet-infilled.txt"]
    texts = (tmp_path / "out" / "sonnet-infilled.txt").read_text()[:-1].split(RULE)
    assert len(texts) == 2
    for text in texts:  # "Let me " + 5 tokens + " true\n" + 5 tokens (for "Admit") + " it"
        assert len(text) == len("Let me ") + 5 + len(" true\n") + 5 + len(" it")
        assert text.startswith("Let me ") and text.endswith(" it")
        assert text[12:18] == " true\n"
    page = (tmp_path / "out" / "sonnet-infilled.md").read_text()
    assert page.count("]] true\n[[") == 2  # two infilled stretches in each of the two texts


@pytest.mark.parametrize("args, words", [
    (["--span", "3-200"], "outside the text"),
    (["--span", "1.5-3"], "whole character"),
    ([], "nothing to infill"),
    (["--span", "0-3", "--method", "repaint"], "Gaussian"),
    (["--span", "0-3", "inpaint.reconstruction=1"], "continuous state"),
    (["--keep", "1"], "does not take --keep"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(toolkit, run, tmp_path, args, words):
    (tmp_path / "plain.txt").write_text("no marks in here")
    code, _, err = toolkit("inpaint", "--run", str(run), "plain.txt", *args, "--steps", "2",
                           "--out", "o")
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert words in err[0]


def test_a_file_that_is_not_text_is_one_line(toolkit, run, tmp_path):
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81 not utf-8")
    code, _, err = toolkit("inpaint", "--run", str(run), "binary.txt", "--span", "0-2", "--out",
                           "o")
    assert code != 0 and len(err) == 1 and "UTF-8" in err[0], err
