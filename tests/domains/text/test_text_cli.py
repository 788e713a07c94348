"""The text domain through the command line: a few-step train + sample + evaluate on CPU (the
diffusion model and the baseline), a tiny benchmark, and bad text input."""

from __future__ import annotations

import json
from pathlib import Path

from text_settings import TINY


def _only_run(root: Path) -> Path:
    (run,) = [p for p in (root / "runs" / "text").iterdir() if p.is_dir()]
    return run


def test_train_sample_evaluate_through_the_cli(toolkit, corpus, tmp_path):
    code, out, err = toolkit("train", "--domain", "text", *TINY, f"data.source={corpus}",
                             "trainer.max_steps=3", "val_every=3", "checkpoint_every=3",
                             "sample.val_n=1", "generate.mode=prefix", "generate.prompt_tokens=8")
    assert code == 0, err
    run = _only_run(tmp_path)
    assert "trained text to step 3" in out
    for name in ("config.yaml", "model.safetensors", "tokenizer.json", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "tokenizer.json").read_text())["kind"] == "char"
    assert (run / "samples" / "step-000003" / "samples.md").is_file()

    code, out, err = toolkit("sample", "--run", str(run), "--steps", "4", "-n", "3")
    assert code == 0, err
    folder = run / "samples" / "mdlm-4"
    texts = (folder / "samples.txt").read_text().split("\n" + "=" * 72 + "\n")
    assert len(texts) == 3 and all(len(t.strip("\n")) > 0 for t in texts)
    prompts = [line for line in (corpus / "work_3.txt").read_text().splitlines()
               if not line.startswith("***")]
    assert texts[0].startswith(prompts[0][:8])  # the test text's first 8 characters are kept
    page = (folder / "samples.md").read_text()
    assert page.startswith("# Text samples (mdlm") and page.count("```text") == 3

    code, _, err = toolkit("sample", "--run", str(run), "--sampler", "ddpm")
    assert code != 0 and "does not apply" in err[-1]  # Gaussian samplers: one line after the bar
    assert [line for line in err if line.startswith("error")] == err[-1:]

    code, out, err = toolkit("evaluate", "--run", str(run), "--steps", "4", "-n", "4")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())["evaluation"]["metrics"]
    assert metrics["kept"] == 1.0 and 0 < metrics["entropy"] <= 5.0

    code, out, err = toolkit("text-generate", "--run", str(run), "--text",
                             "Let me not [MASK] minds", "--span", "6", "--steps", "4", "-n", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "--- sample 1" and lines[1].startswith("Let me not [[")
    assert "]] minds[[" in lines[1] and (run / "samples" / "generate-4" / "samples.md").is_file()

    # the baseline: same data, same tiny size; then the generative perplexity under it
    code, out, err = toolkit("train", "--domain", "text", *TINY, f"data.source={corpus}",
                             "model.kind=ar", "trainer.max_steps=2", "val_every=2",
                             "checkpoint_every=2", "sample.val_n=0", "run_dir=ar_runs")
    assert code == 0, err
    (ar_run,) = (tmp_path / "ar_runs" / "text").iterdir()
    code, out, err = toolkit("sample", "--run", str(ar_run), "-n", "2")
    assert code == 0, err
    assert (ar_run / "samples" / "autoregressive-4" / "samples.txt").is_file()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("baseline_run: null",
                                                 f"baseline_run: {ar_run}"))
    code, out, err = toolkit("evaluate", "--run", str(run), "--steps", "4", "-n", "4")
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())["evaluation"]["metrics"]
    assert 1.0 < metrics["gen_ppl"] < 200 and 1.0 < metrics["data_ppl"] < 200


def test_empty_or_binary_text_is_one_error_line(toolkit, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    for name, words in [("empty.txt", "is empty"), ("image.txt", "is binary"),
                        ("missing.txt", "does not exist")]:
        for command in ("prepare", "train"):
            code, out, err = toolkit(command, "--domain", "text", *TINY,
                                     f"data.source={tmp_path / name}", "trainer.max_steps=1")
            assert code != 0, (command, name)
            assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
            assert "Traceback" not in "".join(err)


def test_quick_benchmark_writes_its_results(toolkit, corpus, tmp_path):
    code, out, err = toolkit(
        "benchmark", "--domain", "text", "--quick", *TINY, f"data.source={corpus}",
        "benchmark.quick.train_steps=2", "benchmark.quick.test_batches=2",
        "benchmark.quick.speed_repeats=1", "benchmark.quick.batch_size=4",
        "benchmark.steps=[2,4,8]", "benchmark.n_samples=2", "benchmark.repeats=1",
        f"benchmark.results_dir={tmp_path / 'results'}")
    assert code == 0, err
    result = json.loads(out)
    for key in ("bpc_mdlm_bound", "bpc_ar", "bound_gap_percent", "gen_ppl_8", "entropy_8",
                "tokens_per_s_cached_8", "tokens_per_s_uncached_8", "cache_speedup_8"):
        assert isinstance(result[key], float), key
    assert result["kept_prefix"] == 1.0 and result["kept_infill"] == 1.0
    assert result["network_calls_uncached_8"] == 8.0
    record = json.loads((tmp_path / "results" / "text_quick.json").read_text())
    assert record["name"] == "text_quick" and record["metrics"]["train_steps"] == 2
    assert (tmp_path / "results" / "text_quick.png").stat().st_size > 10_000
    assert "MDLM" in (tmp_path / "results" / "text_quick.md").read_text()
