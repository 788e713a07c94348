"""A discrete (text) teacher cannot be distilled: one error line, and no run folder is made."""

from __future__ import annotations

from text_settings import TINY


def test_a_text_teacher_is_one_error_line(toolkit, corpus, tmp_path):
    code, out, err = toolkit("train", "--domain", "text", *TINY, f"data.source={corpus}", "trainer.max_steps=1",
                             "val_every=1", "checkpoint_every=1", "sample.val_n=0")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "text").iterdir()
    code, out, err = toolkit("distill", "--run", str(run))
    assert code != 0 and len(err) == 1 and "Traceback" not in out
    assert err[0].startswith("error: the 'text' domain's process (MaskedTextProcess) is not a Gaussian diffusion")
    assert [p.name for p in (tmp_path / "runs" / "text").iterdir()] == [run.name]
