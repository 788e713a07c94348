"""`toolkit benchmark --domain molecules [--quick]`: EDM's metrics per sampler and step count.

1. A model: the run in `benchmark.run`, or a new one trained through the toolkit's Lightning
   trainer (`diffusekit.core.app.training.fit.train`) for `benchmark.train_steps` steps
   (`quick_train_steps` with --quick, where the network may also be shrunk by `quick_network`).
2. Molecule sizes: `n_samples` draws from the training set's atom-count histogram (EDM), sorted and
   cut into batches padded to their largest molecule (padding costs O(N^2) edges).
3. For every sampler in `samplers` and every step count in `steps`: generate from the same noise
   seed, then atom / molecule stability, validity, uniqueness and novelty (metrics.py), and the
   wall time. The QM9 test molecules themselves give the data row (EDM's "Data" line).
4. benchmarks/results/molecules[_quick].{json,md,png} through diffusekit.core.app.results (command,
   commit, machine and date recorded), EDM's published numbers as baselines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from diffusekit.domains.molecules.metrics import molecule_metrics
from diffusekit.core.app import results as results_io

METRICS = ("atom_stability", "mol_stability", "validity", "valid_unique", "novelty")
# EDM, Hoogeboom et al. 2022, Table 1 (QM9, 10,000 samples, 1000 steps); see ANCHORS.md
BASELINES = {
    "qm9_data": {"atom_stability": 99.0, "mol_stability": 95.2, "validity": 97.7,
                 "valid_unique": 97.7},
    "edm_1000": {"atom_stability": 98.7, "mol_stability": 82.0, "validity": 91.9,
                 "valid_unique": 90.7},
}


def _model(domain: Any, cfg: DictConfig) -> tuple[torch.nn.Module, Any, DictConfig, str]:
    """(network with EMA weights, process, the run's config, run folder) of benchmark.run or of
    a run trained now."""
    from diffusekit.core.app.training.inference import load_run
    from diffusekit.core.app.training.runs import RunDir

    b = cfg.benchmark
    if b.run:
        run = RunDir(Path(b.run))
    else:
        from diffusekit.core.app.training.fit import train

        train_cfg = cfg.copy()
        OmegaConf.set_readonly(train_cfg, False)
        train_cfg.trainer.max_steps = int(b.quick_train_steps if cfg.quick else b.train_steps)
        if cfg.quick and b.quick_network:
            train_cfg.network = OmegaConf.merge(train_cfg.network, b.quick_network)
        run = train(domain, train_cfg)
    network, process, run_cfg = load_run(domain, run)
    return network, process, run_cfg, str(run.path)


def draw_sizes(histogram: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """[n] atom counts drawn from `histogram` (counts by size), sorted ascending."""
    p = histogram / histogram.sum()
    sizes = np.random.default_rng(seed).choice(len(p), size=n, p=p)
    return torch.from_numpy(np.sort(sizes)).long()


def run_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """Run the benchmark described in the module docstring; return the metrics dict."""
    b, quick = cfg.benchmark, bool(cfg.quick)
    samplers = list(b.quick_samplers if quick else b.samplers)
    n_samples = int(b.quick_n_samples if quick else b.n_samples)
    datamodule = domain.build_datamodule(cfg)
    datamodule.prepare()
    datamodule.setup()
    train_smiles = datamodule.training_smiles()
    test = datamodule.splits["test"]
    data_row = molecule_metrics([test.structure(k) for k in range(len(test))], train_smiles)

    started, load_start = time.time(), os.getloadavg()[0]
    network, process, run_cfg, run_path = _model(domain, cfg)
    train_seconds = time.time() - started
    sizes = draw_sizes(datamodule.atom_count_histogram(), n_samples, int(b.seed))
    chunks = torch.split(sizes, int(b.batch_size))
    metrics: dict[str, Any] = {"run": run_path, "n_samples": n_samples,
                               "train_steps": int(run_cfg.trainer.max_steps),
                               "network": OmegaConf.to_container(run_cfg.network),
                               "train_seconds": round(train_seconds, 1),
                               "threads": torch.get_num_threads(),
                               **{f"data_{k}": v for k, v in data_row.items()}}
    rows = []
    total = len(samplers) * sum(int(s) for s in b.steps) * len(chunks)
    with tqdm(total=total, desc="benchmark", unit="step") as bar:
        for sampler in samplers:
            for steps in (int(s) for s in b.steps):
                generator = torch.Generator().manual_seed(int(b.seed))
                t0 = time.time()
                structures = []
                for chunk in chunks:
                    structures += domain.generate_sized(
                        network, process, chunk, sampler=sampler, steps=steps,
                        grid="uniform" if sampler == "ddpm" else None, generator=generator,
                        callback=lambda info: bar.update(1))
                seconds = time.time() - t0
                scores = molecule_metrics(structures, train_smiles)
                key = f"{sampler}_{steps}"
                for name in METRICS:
                    metrics[f"{name}_{key}"] = scores.get(name)
                metrics[f"seconds_{key}"] = round(seconds, 1)
                rows.append([sampler, steps] + [scores.get(m) for m in METRICS] + [seconds])
    # the machine may be shared: the 1-minute load average says how busy it was around the run
    metrics.update(total_seconds=round(time.time() - started, 1),
                   load_average_start=round(load_start, 2),
                   load_average_end=round(os.getloadavg()[0], 2))
    _write(cfg, metrics, rows, data_row, samplers)
    return metrics


def _write(cfg: DictConfig, metrics: dict, rows: list, data_row: dict, samplers: list) -> None:
    """benchmarks/results/molecules[_quick].{json,md,png}."""
    name = "molecules_quick" if cfg.quick else "molecules"
    record = results_io.make_record(name, metrics, BASELINES)
    headers = ["sampler", "steps", "atom stab. %", "mol stab. %", "valid %", "valid & unique %",
               "novel %", "seconds"]
    table_rows = [["QM9 test data (ours)", "-"] + [data_row.get(m) for m in METRICS] + [None]]
    table_rows += [[f"{k} (published)", "1000" if k == "edm_1000" else "-"]
                   + [v.get(m) for m in METRICS] + [None] for k, v in BASELINES.items()]
    body = (f"Model: EGNN {metrics['network']}, {metrics['train_steps']} training steps "
            f"({metrics['train_seconds']} s incl. start-up), {metrics['n_samples']} molecules per "
            f"setting, sizes from the training histogram, {metrics['threads']} torch threads; "
            f"{metrics['total_seconds']} s in all, 1-minute load average "
            f"{metrics['load_average_start']} at the start and {metrics['load_average_end']} at "
            f"the end (a shared machine is slower than an idle one).\n\n"
            + results_io.markdown_table(headers, table_rows + rows, digits=4)
            + "\n![metrics per sampler and step count](" + f"{name}.png)\n")
    results_io.write_results(record, body)
    _plot(results_io.RESULTS_DIR / f"{name}.png", rows, samplers, data_row)


def _plot(path: Path, rows: list, samplers: list, data_row: dict) -> None:
    """Atom stability, molecule stability and validity against steps, one line per sampler."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(fig)
    for i, (col, title) in enumerate([(2, "atom stability %"), (3, "molecule stability %"),
                                      (4, "validity %")]):
        ax = fig.add_subplot(1, 3, i + 1)
        for sampler in samplers:
            pts = [(r[1], r[col]) for r in rows if r[0] == sampler]
            ax.plot(*zip(*pts), marker="o", label=sampler)
        ax.axhline(data_row[("atom_stability", "mol_stability", "validity")[i]], color="gray",
                   ls="--", label="QM9 data")
        ax.set(xscale="log", xlabel="sampler steps", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
