"""Bad input to `toolkit`: one `error: ...` line on stderr, a non-zero exit, no traceback."""

import shutil

from error_lines import one_error


def test_unknown_domain_lists_known_and_nearest(toolkit):
    code, out, err = toolkit("config", "--domain", "toyy")
    assert err == [one_error(code, err, "unknown domain 'toyy'", "known:")]


def test_unknown_config_key_names_key_and_nearest(toolkit):
    code, out, err = toolkit("train", "--domain", "toy", "model.hiden=8")
    line = one_error(code, err, "'model.hiden'", "did you mean 'model.hidden'")
    assert err == [line]
    code, out, err = toolkit("config", "--domain", "toy", "trainer.max_step=3")
    assert err == [one_error(code, err, "'trainer.max_step'", "'trainer.max_steps'")]


def test_malformed_override_and_unreadable_config_file(toolkit, tmp_path):
    code, _, err = toolkit("config", "--domain", "toy", "model.hidden")
    assert err == [one_error(code, err, "key=value")]
    code, _, err = toolkit("config", "--domain", "toy", "adapter.targets=[*.attn]")  # YAML alias
    assert err == [one_error(code, err, "adapter.targets", "quote")]
    code, _, err = toolkit("train", "--domain", "toy", "--config", "missing.yaml")
    assert err == [one_error(code, err, "missing.yaml", "does not exist")]
    (tmp_path / "broken.yaml").write_text("model: {hidden: [\n")
    code, _, err = toolkit("config", "--domain", "toy", "--config", "broken.yaml")
    assert err == [one_error(code, err, "broken.yaml")]


def test_usage_errors_are_one_line(toolkit):
    code, _, err = toolkit("train")
    assert err == [one_error(code, err, "--domain")]
    code, _, err = toolkit("sample")
    assert err == [one_error(code, err, "--run")]
    code, _, err = toolkit("frobnicate")
    assert err == [one_error(code, err, "frobnicate")]
    code, _, err = toolkit("sample", "--run", "x", "--steps", "0")
    assert err == [one_error(code, err, "--steps")]


def test_missing_or_foreign_run_folder(toolkit, tmp_path):
    code, _, err = toolkit("sample", "--run", "nowhere")
    assert err == [one_error(code, err, "'nowhere' does not exist")]
    code, _, err = toolkit("evaluate", "--run", str(tmp_path))
    assert err == [one_error(code, err, "no config.yaml")]
    code, _, err = toolkit("train", "--resume", "nowhere")
    assert err == [one_error(code, err, "does not exist")]
    code, _, err = toolkit("train", "--domain", "toy", "--resume")
    assert err == [one_error(code, err, "no run of domain 'toy'")]


def test_bad_trainer_setting_is_one_line(toolkit):
    code, _, err = toolkit("train", "--domain", "toy", "trainer.precision=17")
    one_error(code, err, "trainer settings rejected")


def test_unknown_sampler_missing_and_corrupt_weights_and_checkpoints(toolkit, trained_run):
    run = str(trained_run)
    code, _, err = toolkit("sample", "--run", run, "--sampler", "dpmpp2m")
    assert err == [one_error(code, err, "unknown sampler 'dpmpp2m'", "'dpmpp_2m'", "known:")]
    code, _, err = toolkit("train", "--resume", run, "sample.sampler=eulr")
    assert err == [one_error(code, err, "unknown sampler 'eulr'", "'euler'")]

    weights = trained_run / "model.safetensors"
    shutil.copy(weights, trained_run / "kept.safetensors")
    weights.write_bytes(b"\x00garbage")
    code, _, err = toolkit("sample", "--run", run)
    assert err == [one_error(code, err, "model.safetensors", "cannot be loaded")]
    weights.unlink()
    code, _, err = toolkit("evaluate", "--run", run)
    assert err == [one_error(code, err, "model.safetensors", "does not exist")]

    last = trained_run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # truncated, as by a full disk
    code, _, err = toolkit("train", "--resume", run, "trainer.max_steps=20")
    assert err == [one_error(code, err, "last.ckpt", "cannot be read")]
    last.unlink()
    code, _, err = toolkit("train", "--resume", run, "trainer.max_steps=20")
    assert err == [one_error(code, err, "no checkpoint to resume")]

    (trained_run / "config.yaml").write_text("domain: [toy\n")
    code, _, err = toolkit("sample", "--run", run)
    assert err == [one_error(code, err, "config.yaml")]


def test_unreadable_data_file(toolkit, tmp_path):
    code, _, err = toolkit("train", "--domain", "toy", "data.file=absent.csv")
    one_error(code, err, "absent.csv")
    (tmp_path / "garbage.csv").write_text("1,2\nhello,world\n")
    code, _, err = toolkit("train", "--domain", "toy", "data.file=garbage.csv")
    one_error(code, err, "garbage.csv", "cannot be read")


def test_nan_loss_stops_the_run_with_one_line(toolkit, tmp_path):
    code, _, err = toolkit("train", "--domain", "toy", "model.nan=true")
    line = one_error(code, err, "training loss is nan at step 0", "optim.lr")
    assert code == 3 and line == err[-1]
    # it failed before its first checkpoint: nothing to resume, so no half-made run folder
    assert not list((tmp_path / "runs" / "toy").iterdir())
