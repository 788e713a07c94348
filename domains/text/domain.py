"""The text domain: a masked diffusion language model (MDLM) and its autoregressive baseline.

`TextDomain` implements the `diffusekit.plugins.Domain` methods; training, checkpoints, sampling
and the command line come from the toolkit. From the resolved config (config.yaml):

    build_datamodule(cfg) -> data.TextDataModule      batches {"x0": [B, L] tokens, "n_chars": [B]}
    build_network(cfg)    -> network.NETWORKS[model.kind]   net(tokens, t) -> [B, L, V] logits
    process(cfg)          -> process.PROCESSES[model.kind]: MaskedTextProcess (mdlm) |
                             AutoregressiveProcess (ar)
    evaluate(batch, samples, cfg)    entropy, kept share, generative perplexity under a baseline
    write_samples(samples, out, cfg) samples.txt and samples.md, decoded with the run's tokenizer
    benchmark(cfg)                   see `benchmark.run_benchmark`
    read_damaged / write_repaired    `toolkit inpaint`: a text file with [MASK] marks or --span
                                     ranges, infilled by the masked diffusion (generation.py)

    toolkit prepare --domain text
    toolkit train --domain text                    # the diffusion model
    toolkit train --domain text model.kind=ar      # the baseline, same tokens, same steps
    toolkit sample --run runs/text/<ts> generate.mode=... (see config) -n 8
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.domains.text import metrics
from diffusekit.domains.text.network import build_text_network
from diffusekit.domains.text.process import (PROCESSES, SAMPLER_NAME, AutoregressiveProcess,
                                             generation_settings)
from diffusekit.domains.text.tokenization import (TOKENIZER_FILE, Tokenizer, load_tokenizer,
                                                  run_folder_of, tokenizer_vocab_size)
from diffusekit.plugins import Damaged, Domain, Region


class TextDomain(Domain):
    """Character- (or BPE-) level text: Shakespeare or a user's own text."""

    name = "text"
    description = "masked discrete diffusion language model (MDLM) on Shakespeare or your text"
    # LoRA's default targets (adapter.targets): attention and MLP, plus the head and the decoder
    # (tied to the character embedding), where a new corpus's character statistics come out
    # (0.24% more of the parameters; see docs/customise.md for what they changed)
    adapter_targets = ("*.attn.Wqkv", "*.attn.Wo", "*.mlp.Wi", "*.mlp.Wo", "*.head.dense",
                       "*.decoder")
    inpaint_regions = ("span",)  # toolkit inpaint: character ranges (or [MASK] in the text)

    def build_datamodule(self, cfg: DictConfig) -> Any:
        from diffusekit.domains.text.data import TextDataModule, prepare_corpus

        prepare_corpus(cfg)  # bad text input fails here, in one line, before the trainer starts
        return TextDataModule(cfg)

    def build_network(self, cfg: DictConfig) -> torch.nn.Module:
        return build_text_network(str(cfg.model.kind), tokenizer_vocab_size(cfg.tokenizer),
                                  int(cfg.data.seq_len), cfg.model)

    def process(self, cfg: DictConfig) -> Any:
        return PROCESSES.get(str(cfg.model.kind))(cfg)

    def tokenizer(self, cfg: DictConfig, near: Path | None = None) -> Tokenizer:
        """The run's tokenizer when `near` lies in a run folder, else the prepared data's."""
        run = run_folder_of(near) if near is not None else None
        if run is not None:
            return load_tokenizer(run / TOKENIZER_FILE)
        return self.build_datamodule(cfg).tokenizer

    def evaluate(self, batch: dict, samples: Tensor, cfg: DictConfig) -> dict[str, float]:
        """entropy: mean per-sample token-histogram entropy (bits) of the samples; kept: share of
        the prompt / context tokens the samples kept (1.0); data_entropy: the same entropy of the
        batch's real text; gen_ppl (+ data_ppl): perplexity of the samples (and of the real
        text) under the baseline of `evaluate.baseline_run`, when one is given; ngram_bpc (+
        data_ngram_bpc): bits per character of the samples (and of the real text) under a
        character n-gram model of the data's training split (`evaluate.ngram_order`; 0: off),
        a judge that needs no trained baseline."""
        x0 = batch["x0"]
        keep = generation_settings(cfg).keep(x0)
        out = {"entropy": metrics.sample_entropy(samples),
               "data_entropy": metrics.sample_entropy(x0),
               "kept": metrics.kept_fraction(samples, x0, keep)}
        if int(cfg.evaluate.ngram_order) > 0:
            out.update(self.judge_scores(batch, samples, cfg))
        if cfg.evaluate.baseline_run:
            network, process = self.load_baseline(cfg.evaluate.baseline_run)
            out["gen_ppl"] = metrics.generative_perplexity(network, process, samples.cpu())
            out["data_ppl"] = metrics.generative_perplexity(network, process, x0.cpu())
        return out

    def judge_scores(self, batch: dict, samples: Tensor, cfg: DictConfig) -> dict[str, float]:
        """ngram_bpc and data_ngram_bpc: bits per character of the samples and of the batch's
        real text under the n-gram judge counted on the training split of `cfg.data` (the
        target's, when the customisation benchmark scores a model on its target)."""
        from diffusekit.domains.text.data import prepare_corpus

        folder = prepare_corpus(cfg)
        judge = metrics.ngram_judge(str(folder / "train.pt"),
                                    tokenizer_vocab_size(cfg.tokenizer),
                                    int(cfg.evaluate.ngram_order))
        lengths = load_tokenizer(folder / TOKENIZER_FILE).char_lengths()
        return {"ngram_bpc": metrics.ngram_bits_per_char(judge, samples, lengths),
                "data_ngram_bpc": metrics.ngram_bits_per_char(judge, batch["x0"], lengths)}

    def finetune_target(self, cfg: DictConfig) -> dict[str, Any]:
        """The customisation benchmark's target: fortune cookies (Debian's `fortunes`, short
        modern texts the Shakespeare base never saw; `fortunes.prepare_fortunes`), whose training
        split holds at most 10% of the characters of the base's (measured on the prepared base
        corpus), in the base's character tokenizer. Scored by test_loss, the MDLM bound (NELBO, in
        nats per token = per character) on held-out fortunes that the customisation benchmark
        computes for every model (lower is better); ngram_bpc of the samples is recorded
        beside it."""
        from diffusekit.core.errors import ConfigError
        from diffusekit.domains.text.corpus import data_root
        from diffusekit.domains.text.data import prepare_corpus
        from diffusekit.domains.text.fortunes import prepare_fortunes

        if str(cfg.tokenizer.kind) != "char":
            raise ConfigError(f"tokenizer.kind={cfg.tokenizer.kind}: the text customisation "
                              "benchmark needs the char tokenizer (a BPE vocabulary is learned "
                              "from each corpus, so the target's would not be the base's)")
        info = json.loads((prepare_corpus(cfg) / "info.json").read_text())
        budget = int(info["train_chars"]) // 10
        folder = prepare_fortunes(data_root(cfg.data.cache_dir), budget, int(cfg.data.seed))
        return {"overrides": [f"data.source={folder}", "data.test_works=[test]",
                              "data.val_works=[val]"],
                "metric": "test_loss", "higher_is_better": False}

    def load_baseline(self, run_path: str | Path
                      ) -> tuple[torch.nn.Module, AutoregressiveProcess]:
        """The EMA network and process of a finished `model.kind=ar` run."""
        from diffusekit.core.app.training.inference import load_run
        from diffusekit.core.app.training.runs import RunDir
        from diffusekit.core.errors import RunDirError

        run = RunDir.open(run_path)
        network, process, cfg = load_run(self, run)
        if str(cfg.model.kind) != "ar":
            raise RunDirError(f"evaluate.baseline_run {str(run_path)!r} is a {cfg.model.kind!r} "
                              "run, not an autoregressive (model.kind=ar) one")
        return network, process

    def write_samples(self, samples: Tensor, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """samples.txt (one sample after another, separated by a rule) and samples.md (a page
        with the settings and every sample in a block)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = self.tokenizer(cfg, near=out_dir)
        texts = [tokenizer.decode(row.tolist()) for row in samples.detach().cpu()]
        txt, md = out_dir / "samples.txt", out_dir / "samples.md"
        rule = "\n" + "=" * 72 + "\n"
        txt.write_text(rule.join(texts) + "\n")
        kind = str(cfg.model.kind)
        g = cfg.generate
        lines = [f"# Text samples ({kind}, {SAMPLER_NAME[kind]} sampler)", "",
                 f"- generation: {g.mode}"
                 + (f" ({g.prompt_tokens} prompt tokens)" if g.mode == "prefix" else "")
                 + (f" (span {g.infill_start}+{g.infill_length} of each sequence)"
                    if g.mode == "infill" else ""),
                 f"- tokens per sample: {samples.shape[1]} ({tokenizer.kind} tokenizer)",
                 f"- temperature {cfg.process.temperature}, top-p {cfg.process.top_p}, "
                 f"semi-AR block {cfg.process.block_size}", ""]
        for i, text in enumerate(texts):
            lines += [f"## Sample {i + 1}", "", "```text", text.replace("```", "'''"), "```", ""]
        md.write_text("\n".join(lines))
        return [txt, md]

    def read_damaged(self, path: Path, region: Region, cfg: DictConfig) -> Damaged:
        """A text file: each [MASK] in it is `repair.mask_tokens` tokens to infill, each --span
        START-END (characters) as many tokens as its text takes (generation.py)."""
        from diffusekit.domains.text.generation import read_damaged

        return read_damaged(self, path, region, cfg)

    def write_repaired(self, samples: Tensor, damaged: Damaged, out_dir: Path,
                       cfg: DictConfig) -> list[Path]:
        """<name>-infilled.txt and <name>-infilled.md (generation.py)."""
        from diffusekit.domains.text.generation import write_repaired

        return write_repaired(samples, damaged, out_dir)

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        from diffusekit.domains.text.benchmark import run_benchmark

        return run_benchmark(self, cfg)
