"""What each `toolkit` command prints and does (in-process, with the toy domain)."""

import json

import yaml


def test_domains_lists_names_with_descriptions(toolkit):
    code, out, err = toolkit("domains")
    assert code == 0 and "toy" in out and "Gaussian mixture" in out


def test_config_prints_the_resolved_yaml(toolkit):
    code, out, err = toolkit("config", "--domain", "toy", "model.hidden=8", "optim.lr=0.5")
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert cfg["domain"] == "toy" and cfg["model"]["hidden"] == 8 and cfg["optim"]["lr"] == 0.5
    assert cfg["trainer"]["accelerator"] == "cpu" and "checkpoint_every" in cfg


def test_config_file_and_overrides_compose(toolkit, tmp_path):
    (tmp_path / "mine.yaml").write_text("model:\n  hidden: 12\nseed: 5\n")
    code, out, _ = toolkit("config", "--domain", "toy", "--config", "mine.yaml", "seed=6")
    cfg = yaml.safe_load(out)
    assert code == 0 and cfg["model"]["hidden"] == 12 and cfg["seed"] == 6


def test_prepare_and_benchmark(toolkit):
    code, out, err = toolkit("prepare", "--domain", "toy")
    assert code == 0 and "prepared" in out, err
    code, out, err = toolkit("benchmark", "--domain", "toy", "--quick", "model.hidden=4")
    assert code == 0, err
    assert json.loads(out) == {"quick": True, "hidden": 4}
    code, out, _ = toolkit("benchmark", "--domain", "toy")
    assert json.loads(out)["quick"] is False


def test_benchmark_of_a_domain_without_one_is_one_line(toolkit, monkeypatch):
    from toy_domain import ToyDomain

    from diffusekit.plugins.domain import Domain

    monkeypatch.setattr(ToyDomain, "benchmark", Domain.benchmark)
    code, _, err = toolkit("benchmark", "--domain", "toy")
    assert code != 0 and err == ["error: domain 'toy' has no benchmark"]


def test_train_prints_the_run_then_resume_latest_extends_it(toolkit, trained_run):
    code, out, err = toolkit("train", "--domain", "toy", "--resume", "trainer.max_steps=15")
    assert code == 0, err
    assert "to step 15" in out and out.rstrip().endswith(f"runs/toy/{trained_run.name}")
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["step"] == 15 and metrics["resumed_at_steps"] == [10]
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["trainer"]["max_steps"] == 15


def test_sample_and_evaluate_print_what_they_wrote(toolkit, trained_run):
    code, out, err = toolkit("sample", "--run", str(trained_run), "--sampler", "heun",
                             "--steps", "3", "-n", "5")
    assert code == 0, err
    assert out.startswith("samples: 1 file(s) in ") and out.rstrip().endswith("heun-3")
    code, out, err = toolkit("evaluate", "--run", str(trained_run), "--steps", "3", "-n", "10")
    assert code == 0, err
    assert "evaluated 10 examples" in out and "mean_error" in out and "metrics.json" in out
