"""Scaffold-constrained generation: `toolkit inpaint --run R mol.sdf --keep 0-5,9 -n 8`, and the
repair benchmark `toolkit benchmark --domain molecules --repair [--quick]`.

Reading (`read_damaged`): the first molecule of an SDF or XYZ file (H C N O F atoms); the atoms
named by --keep (0-based, as in the file) are kept, every other atom is generated: its position
and its type. The completions have the input's number of atoms, the kept ones at their indices.
The known part is the kept atoms' positions as given (the input's own frame) and their features
(`data.FeatureCodec`: one-hot type, atomic number, formal charge when the model generates it).
The model's space is zero-CoM (EDM), so the engine inpaints in the frame of the kept atoms
(`core.inpainting.CentroidFrame`: their positions are taken relative to their centroid, the
sampler runs, and the molecule is translated back), which leaves every kept atom where it was
given, up to float rounding. Writing pastes the kept atoms exactly as read (positions, elements,
charges), so the SDF shows them unchanged.

The benchmark (`run_repair_benchmark`):

1. a base model, `repair.train_steps` steps (`quick_train_steps`) through the toolkit's trainer;
2. `n_test` held-out QM9 test molecules (a seeded subset); each keeps a connected fragment of a
   share of its atoms drawn uniformly in [`keep_min`, `keep_max`] (breadth-first over the
   distance-table bonds from a random heavy atom, `kept_fragment`);
3. every setting of `core.app.repair.sweep_settings` (replacement with each of `samplers`,
   RePaint) completes each molecule once, and the same model draws as many molecules of the same
   sizes unconditionally with each sampler at `unconditional_steps`;
4. scores: EDM's atom / molecule stability and validity (metrics.py), the share of completions
   that are valid with every kept atom in their largest fragment (`fragment_kept`), and how
   exactly the kept atoms came back (the largest position error in Angstrom, after the frame is
   undone, and whether every kept type is the given one).

Targets (issue 18): the kept atoms exact (positions to 1e-5) and the completions' validity at
least the unconditional model's: the best setting's against the best unconditional run (the
record also lists every setting below it).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app import results as results_io
from diffusekit.core.app.repair import (BenchmarkRun, generator_for, inpaint_batch, nfe_curves,
                                        output_name, sweep_settings)
from diffusekit.core.app.training.inference import sampling_device
from diffusekit.core.errors import DataError
from diffusekit.domains.molecules.metrics import (bond_orders, largest_fragment_smiles,
                                                  molecule_metrics, rdkit_molecule)
from diffusekit.domains.molecules.process import decode
from diffusekit.domains.molecules.structures import ELEMENTS, Structure, read_structure_file
from diffusekit.plugins.domain import Damaged, Region


# --------------------------------------------------------------------------------- the command
def encode_known(structures: list[Structure], keep: list[Tensor], cfg: DictConfig
                 ) -> tuple[dict, Tensor]:
    """(batch, known [B, N] bool) of molecules with their kept atoms (`keep`: [n_b] bool each):
    x0 [B, N, 3 + F] with the kept atoms' positions as given (not centred) and their features,
    zeros elsewhere; N the largest molecule."""
    from diffusekit.domains.molecules.data import FeatureCodec

    codec = FeatureCodec.from_config(cfg.data)
    n = max(s.n_atoms for s in structures)
    index = {e: i for i, e in enumerate(ELEMENTS)}
    pos = torch.zeros(len(structures), n, 3, dtype=torch.float64)
    types = torch.zeros(len(structures), n, dtype=torch.long)
    charges = torch.zeros(len(structures), n, dtype=torch.long)
    mask = torch.zeros(len(structures), n, dtype=torch.bool)
    known = torch.zeros(len(structures), n, dtype=torch.bool)
    for b, (s, kept) in enumerate(zip(structures, keep)):
        pos[b, : s.n_atoms] = torch.from_numpy(s.positions)
        types[b, : s.n_atoms] = torch.tensor([index[e] for e in s.elements])
        if s.charges is not None:
            charges[b, : s.n_atoms] = torch.from_numpy(s.charges.astype(np.int64))
        mask[b, : s.n_atoms] = True
        known[b, : s.n_atoms] = kept
    x0 = codec.encode(pos.float(), types, mask, charges)
    x0[..., :3] = (pos * mask[..., None]).float()  # the given frame, not centred
    x0 = torch.where(known[..., None], x0, torch.zeros_like(x0))
    return {"x0": x0, "mask": mask, "cond": {"node_mask": mask}}, known


def read_damaged(path: Path, region: Region, cfg: DictConfig) -> Damaged:
    """The first molecule of an SDF / XYZ file and the atoms to keep (see the module docstring)."""
    if region.keep is None:
        raise DataError("say which atoms to keep: --keep I,J,K-L (0-based atom indices)")
    structures = read_structure_file(Path(path))
    if not structures:
        raise DataError(f"input {str(path)!r} holds no readable molecule of H C N O F atoms "
                        "(.sdf or .xyz)")
    molecule = structures[0]
    n = molecule.n_atoms
    if n > int(cfg.data.max_atoms):
        raise DataError(f"the molecule has {n} atoms; this model's molecules have at most "
                        f"{cfg.data.max_atoms} (data.max_atoms)")
    wrong = [i for i in region.keep if i >= n]
    if wrong:
        raise DataError(f"--keep: atom index {wrong[0]} is out of range: the molecule has {n} "
                        f"atoms (0-{n - 1})")
    keep = torch.zeros(n, dtype=torch.bool)
    keep[list(region.keep)] = True
    batch, known = encode_known([molecule], [keep], cfg)
    return Damaged(batch, known, source={"molecule": molecule, "keep": keep},
                   name=output_name(Path(path)))


def completed(samples: Tensor, molecule: Structure, keep: Tensor, cfg: DictConfig
              ) -> list[Structure]:
    """The completions [K, N, 3 + F] as Structures with the kept atoms pasted exactly as read
    (positions, elements, charges)."""
    n = molecule.n_atoms
    mask = torch.ones(samples.shape[0], n, dtype=torch.bool)
    out = []
    kept = keep.numpy()
    for s in decode(samples[:, :n], mask, cfg):
        positions = np.where(kept[:, None], molecule.positions, s.positions)
        elements = tuple(molecule.elements[i] if kept[i] else e for i, e in enumerate(s.elements))
        charges = s.charges
        if molecule.charges is not None:
            given = molecule.charges.astype(np.int8)
            charges = np.where(kept, given, s.charges if s.charges is not None else 0)
        out.append(Structure(elements, positions, None if charges is None
                             else np.asarray(charges, dtype=np.int8)))
    return out


def write_repaired(samples: Tensor, damaged: Damaged, out_dir: Path, cfg: DictConfig,
                   draw: Any = None) -> list[Path]:
    """<name>-completions.sdf and .xyz (every completion, kept atoms as read) and, with `draw`
    (the domain's `draw_valid`), <name>-completions.png of the valid ones."""
    from diffusekit.domains.molecules.structures import write_sdf, write_xyz

    structures = completed(samples.detach().cpu(), damaged.source["molecule"],
                           damaged.source["keep"], cfg)
    molecules = [rdkit_molecule(s, with_charges=True) for s in structures]
    smiles = [largest_fragment_smiles(m) for m in molecules]
    out = Path(out_dir)
    paths = [write_sdf(molecules, out / f"{damaged.name}-completions.sdf"),
             write_xyz(structures, out / f"{damaged.name}-completions.xyz",
                       [f"completion {k} {s or 'invalid'}" for k, s in enumerate(smiles)])]
    if draw is not None:
        paths.append(draw(smiles, out / f"{damaged.name}-completions.png", cfg))
    return paths


# -------------------------------------------------------------------------------- the benchmark
def kept_fragment(molecule: Structure, share: float, rng: np.random.Generator) -> Tensor:
    """[n] bool: a connected set of round(share n) atoms (at least 1, at most n - 1), grown
    breadth-first over the distance-table bonds from a random heavy atom (lowest index first
    among equals); when the bond graph runs out, from another random unvisited atom."""
    n = molecule.n_atoms
    target = int(min(max(1, round(share * n)), n - 1))
    adjacency = bond_orders(molecule.elements, molecule.positions) > 0
    heavy = [i for i, e in enumerate(molecule.elements) if e != "H"] or list(range(n))
    chosen: list[int] = []
    queue = [int(rng.choice(heavy))]
    while len(chosen) < target:
        if not queue:
            queue = [int(rng.choice([i for i in range(n) if i not in chosen]))]
        atom = queue.pop(0)
        if atom in chosen:
            continue
        chosen.append(atom)
        queue += [int(j) for j in np.flatnonzero(adjacency[atom]) if j not in chosen]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[chosen] = True
    return keep


def fragment_kept(structure: Structure, keep: Tensor) -> bool:
    """The completion sanitises in RDKit and every kept atom lies in its largest fragment."""
    from rdkit import Chem

    mol = rdkit_molecule(structure)
    if largest_fragment_smiles(mol) is None:
        return False
    fragments = Chem.GetMolFrags(mol, asMols=False)
    largest = max(fragments, key=len)
    return set(np.flatnonzero(keep.numpy()).tolist()) <= set(largest)


def exactness(samples: Tensor, batch: dict, known: Tensor) -> dict[str, Any]:
    """The largest distance (Angstrom) of a kept atom's returned position from the given one,
    and whether every kept atom's feature channels are the given ones; samples as the process
    returned them (no pasting)."""
    given = batch["x0"]
    error = (samples[..., :3] - given[..., :3]).norm(dim=-1)[known]
    features_equal = bool(torch.equal(samples[..., 3:][known], given[..., 3:][known]))
    return {"kept_max_position_error": float(error.max()) if error.numel() else 0.0,
            "kept_features_exact": features_equal}


def run_repair_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """The benchmark of the module docstring; writes benchmarks/results/
    molecules_repair[_quick].* (or `repair.results_dir`) and returns {"metrics", "baselines"}."""
    from diffusekit.core.app.training.fit import train_for_benchmark

    r = cfg.repair
    run = BenchmarkRun.start(cfg)
    quick, steps, n_test, seed = run.quick, run.train_steps, run.n_test, run.seed
    datamodule = domain.build_datamodule(cfg)
    datamodule.prepare()
    datamodule.setup()
    test = datamodule.splits["test"]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(test))[:n_test]
    molecules = [test.structure(int(k)) for k in pick]
    shares = rng.uniform(float(r.keep_min), float(r.keep_max), size=len(molecules))
    keeps = [kept_fragment(m, float(f), rng) for m, f in zip(molecules, shares)]
    overrides = [f"seed={seed}", *[str(o) for o in r.train_overrides]]
    with tempfile.TemporaryDirectory(prefix="diffusekit-molecules-repair-") as scratch:
        work = Path(r.run_dir) if r.get("run_dir") else Path(scratch)
        trained = train_for_benchmark(domain, cfg, steps, work, overrides=overrides,
                                      own_section="repair")
    network, process, run_cfg = trained.network, trained.process, trained.cfg
    batch, known = encode_known(molecules, keeps, run_cfg)
    batch_size = int(r.batch_size)
    rows: list[dict[str, Any]] = []
    drawn: dict[str, list[Structure]] = {}
    network.to(sampling_device(cfg))  # the sweeps run where sample.device says
    for setting in sweep_settings(r):
        started = time.perf_counter()
        generator = generator_for(network, seed + 1)
        samples = torch.cat([inpaint_batch(
            network, process, _rows(batch, a, batch_size), known[a:a + batch_size],
            method=setting.instance(), sampler=setting.sampler, steps=setting.steps,
            generator=generator)
            for a in range(0, len(molecules), batch_size)])
        structures = decode(samples, batch["mask"], run_cfg)
        scores = molecule_metrics(structures)
        fields = setting.fields()
        rows.append({"system": fields.pop("setting"), **fields,
                     **{k: scores[k] for k in ("atom_stability", "mol_stability", "validity")},
                     "fragment_kept": 100.0 * float(np.mean([fragment_kept(s, k) for s, k
                                                            in zip(structures, keeps)])),
                     **exactness(samples, batch, known),
                     "seconds": round(time.perf_counter() - started, 1)})
        drawn[setting.label] = structures
    baselines: dict[str, Any] = {}
    sizes = torch.tensor([m.n_atoms for m in molecules])
    for sampler in (str(x) for x in r.samplers):
        for n_steps in r.unconditional_steps:
            started = time.perf_counter()
            generator = generator_for(network, seed + 2)
            structures = []
            for chunk in sizes.split(batch_size):
                structures += domain.generate_sized(network, process, chunk, sampler=sampler,
                                                    steps=int(n_steps), generator=generator)
            scores = molecule_metrics(structures)
            baselines[f"unconditional_{sampler}_{int(n_steps)}"] = {
                "sampler": sampler, "nfe": int(n_steps),
                **{k: scores[k] for k in ("atom_stability", "mol_stability", "validity")},
                "seconds": round(time.perf_counter() - started, 1)}
    data = molecule_metrics(molecules)
    baselines["test_molecules"] = {k: data[k] for k in ("atom_stability", "mol_stability",
                                                        "validity")}
    metrics = {"rows": rows, "train_steps": steps, "train_seconds": trained.seconds,
               "network": {k: run_cfg.network[k] for k in ("hidden", "n_layers")},
               "n_test": len(molecules), "samplers": [str(x) for x in r.samplers],
               "quick": quick,
               "kept_share": float(np.mean([float(k.double().mean()) for k in keeps])),
               **_targets(rows, baselines, float(r.position_tolerance)),
               **run.clock()}
    _write(cfg, run, metrics, baselines, drawn, molecules, keeps)
    return {"metrics": metrics, "baselines": baselines}


def _rows(batch: dict, start: int, size: int) -> dict:
    return {"x0": batch["x0"][start:start + size], "mask": batch["mask"][start:start + size],
            "cond": {"node_mask": batch["mask"][start:start + size]}}


def _targets(rows: list[dict], baselines: dict, tolerance: float) -> dict[str, Any]:
    worst = max(row["kept_max_position_error"] for row in rows)
    exact = worst <= tolerance and all(row["kept_features_exact"] for row in rows)
    unconditional = max(v["validity"] for k, v in baselines.items()
                        if k.startswith("unconditional_"))
    below = [row["system"] for row in rows if row["validity"] < unconditional]
    best = max(rows, key=lambda row: row["validity"])
    return {"kept_max_position_error": worst, "position_tolerance": tolerance,
            "target_kept_exact": exact, "unconditional_best_validity": unconditional,
            "best_completion": best["system"], "best_completion_validity": best["validity"],
            "settings_below_unconditional_validity": below,
            "target_validity_at_least_unconditional": best["validity"] >= unconditional}


def _write(cfg: DictConfig, run: BenchmarkRun, metrics: dict, baselines: dict,
           drawn: dict[str, list[Structure]], molecules: list[Structure],
           keeps: list[Tensor]) -> None:
    r = cfg.repair
    name, out_dir = run.record_place(cfg, "molecules")
    title = (f"Molecules repair (scaffold-constrained completion): {metrics['n_test']} held-out "
             f"QM9 molecules keeping {100 * metrics['kept_share']:.0f}% of their atoms on "
             f"average, EGNN {metrics['network']['n_layers']} x {metrics['network']['hidden']}, "
             f"{metrics['train_steps']} training steps")
    _figure(out_dir / f"{name}.png", metrics, baselines, drawn, molecules, keeps,
            int(r.figure_molecules), title)
    headers = ["system", "NFE", "atom stab. %", "mol stab. %", "valid %", "fragment kept %",
               "kept position error (A)", "kept types exact", "seconds"]
    table = [[row["system"], row["nfe"], row["atom_stability"], row["mol_stability"],
              row["validity"], row["fragment_kept"], row["kept_max_position_error"],
              row["kept_features_exact"], row["seconds"]] for row in metrics["rows"]]
    for key, value in baselines.items():
        if key.startswith("unconditional_"):
            table.append([f"unconditional, {value['sampler']} {value['nfe']} steps (same "
                          "sizes)", value["nfe"],
                          value["atom_stability"], value["mol_stability"], value["validity"],
                          "-", "-", "-", value["seconds"]])
    data = baselines["test_molecules"]
    table.append(["the test molecules themselves", "-", data["atom_stability"],
                  data["mol_stability"], data["validity"], "-", "-", "-", "-"])
    lines = [title, "",
             f"RePaint with {metrics['samplers'][0]}; one completion per molecule; each keeps a "
             "connected "
             "fragment (breadth-first over the distance-table bonds) of "
             f"{100 * float(r.keep_min):.0f}-{100 * float(r.keep_max):.0f}% of its atoms. "
             "Fragment kept: valid, with every kept atom in the largest fragment.", "",
             results_io.markdown_table(headers, table, digits=4), "",
             f"- kept atoms: largest position error {metrics['kept_max_position_error']:.2e} A "
             f"(tolerance {metrics['position_tolerance']:g}), types "
             f"{'exact' if all(row['kept_features_exact'] for row in metrics['rows']) else 'changed'}"
             f": target {'met' if metrics['target_kept_exact'] else 'not met'}.",
             f"- validity of the completions >= the unconditional model's best "
             f"({metrics['unconditional_best_validity']:.1f}%): "
             f"{'met' if metrics['target_validity_at_least_unconditional'] else 'not met'} by "
             f"the best setting, {metrics['best_completion']} "
             f"({metrics['best_completion_validity']:.1f}%)"
             + (f"; below it: {', '.join(metrics['settings_below_unconditional_validity'])}"
                if metrics["settings_below_unconditional_validity"] else "; no setting below it") + ".",
             "", BenchmarkRun.timing_line(metrics, training=False), "",
             f"![kept fragments and completions]({name}.png)"]
    record = results_io.make_record(name, metrics, baselines)
    results_io.write_results(record, "\n".join(lines), out_dir,
                             title=f"Molecules repair ({name})")


def _figure(path: Path, metrics: dict, baselines: dict, drawn: dict[str, list[Structure]],
            molecules: list[Structure], keeps: list[Tensor], count: int, title: str) -> None:
    """Top: 2D drawings (RDKit) of test molecules, kept atoms highlighted, over the completion of
    the setting with the highest validity (kept atoms highlighted too). Bottom: validity and
    fragment kept against NFE, the unconditional validity as lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    best = max(metrics["rows"], key=lambda row: row["validity"])["system"]
    fig = Figure(figsize=(12, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1)
    image = _drawings(molecules[:count], drawn[best][:count], keeps[:count])
    if image is not None:
        ax.imshow(image)
    ax.set_title(f"top: test molecules, kept atoms highlighted; bottom: their completions "
                 f"({best})", fontsize=9)
    ax.set_axis_off()
    ax = fig.add_subplot(2, 1, 2)
    for key, style in (("validity", "-"), ("fragment_kept", ":")):
        for k, (curve, pts) in enumerate(nfe_curves(metrics["rows"], key).items()):
            ax.plot(*zip(*pts), ("s" if curve.startswith("repaint") else "o") + style, color=f"C{k}",
                    label=f"{key}, {curve}")
    for key, value in baselines.items():
        if key.startswith("unconditional_"):
            ax.axhline(value["validity"], color="0.4", ls=":", lw=1)
            ax.annotate(f"unconditional validity, {value['sampler']} {value['nfe']} steps",
                        (0.01, value["validity"]),
                        xycoords=("axes fraction", "data"), fontsize=7, color="0.3")
    ax.set(xscale="log", xlabel="NFE", ylabel="%")
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _drawings(molecules: list[Structure], completions: list[Structure], keeps: list[Tensor]
              ) -> np.ndarray | None:
    """A grid image: test molecules (top row) over their completions, kept atoms highlighted;
    None when RDKit cannot draw."""
    try:
        from rdkit.Chem import AllChem, Draw

        mols, highlights = [], []
        for group in (molecules, completions):
            for s, keep in zip(group, keeps):
                mol = rdkit_molecule(s)
                mol.UpdatePropertyCache(strict=False)
                AllChem.Compute2DCoords(mol)
                mols.append(mol)
                highlights.append([int(i) for i in np.flatnonzero(keep.numpy())])
        image = Draw.MolsToGridImage(mols, molsPerRow=max(1, len(molecules)),
                                     subImgSize=(200, 170), highlightAtomLists=highlights)
        return np.asarray(image.convert("RGB"))
    except Exception:  # a drawing is a picture only; RDKit refuses some odd valences
        return None
