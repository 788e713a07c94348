"""The molecule domain's EGNN training step against the reference EGNN of EDM's own code, side by
side on the same batch.

    python benchmarks/egnn_throughput.py --edm PATH [--hidden 256 --layers 9 --batch 64]
                                         [--repeats 5 --threads 1 --device cpu --out DIR]

PATH is a checkout of EDM's public repository (github.com/ehoogeboom/e3_diffusion_for_molecules),
which is never part of this one: its `egnn/` and `equivariant_diffusion/` packages are imported
from there. Both models are built at EDM's published QM9 size (9 layers, 256 wide; EDM's
`EGNN_dynamics_QM9` with its QM9 settings: attention, tanh with coords_range 15, one invariant
sub-layer, norm_constant 1, sum aggregation; diffusekit's `MoleculeEGNN`) and both train on one
batch of `--batch` QM9 molecules (from the prepared QM9 cache, padded to the batch's largest
molecule, up to 29 atoms, as EDM's collate does; seeded random molecules of 9 to 29 atoms when
there is no cache). Timed, interleaved, `--repeats` times after one warm-up each:

    step      one whole training step, each with its own code: the diffusion loss (ours:
              `GaussianDiffusion.training_loss` in the ZeroCoM space; EDM: `EnVariationalDiffusion`
              with the l2 loss and its polynomial_2 schedule), backward, gradient clipping, the
              AdamW step (EDM's: amsgrad) and the EMA update;
    network   the network alone: forward and backward of the same noised batch (sum of squares
              of the output as the loss).

(`--measure step,network`; step alone by default). Medians, and the ratio ours / EDM (below
1: ours is faster). The record,
benchmarks/results/egnn_throughput.{json,md} (or `--out`), names the command with the EDM
path replaced by a placeholder, the commit, the machine and the EDM revision.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from diffusekit.core.app import results as results_io

EDM_PLACEHOLDER = "EDM_CHECKOUT"
N_TYPES = 5  # H C N O F
CHARGES = (1.0, 6.0, 7.0, 8.0, 9.0)  # atomic numbers: EDM's "charges" feature


# ------------------------------------------------------------------------------------ the batch
def qm9_batch(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(positions [B, N, 3] centred, types [B, N] in 0..4, node mask [B, N], source) of `batch`
    training molecules of the prepared QM9 cache, N the largest of them; seeded random
    molecules of 9 to 29 atoms (source "synthetic") when the cache is not there."""
    from diffusekit.core.app.config import data_cache

    generator = np.random.default_rng(seed)
    path = data_cache("molecules") / "qm9-v3.npz"
    if path.is_file():
        from diffusekit.domains.molecules.data import QM9_SPLIT, MoleculeSet, split_indices

        molecules = MoleculeSet.load(path)
        train = split_indices(len(molecules), QM9_SPLIT, 0)[0]
        picks = generator.choice(train, size=batch, replace=False)
        structures = [molecules.structure(int(k)) for k in picks]
        types = [[ELEMENT_INDEX[e] for e in s.elements] for s in structures]
        positions = [np.asarray(s.positions, dtype=np.float32) for s in structures]
        source = "qm9"
    else:
        sizes = generator.integers(9, 30, size=batch)
        types = [generator.integers(0, N_TYPES, size=n).tolist() for n in sizes]
        positions = [generator.normal(scale=1.5, size=(n, 3)).astype(np.float32) for n in sizes]
        source = "synthetic"
    n = max(len(t) for t in types)
    x = torch.zeros(batch, n, 3)
    z = torch.zeros(batch, n, dtype=torch.long)
    mask = torch.zeros(batch, n, dtype=torch.bool)
    for b, (t, p) in enumerate(zip(types, positions)):
        x[b, :len(t)] = torch.from_numpy(p - p.mean(0))
        z[b, :len(t)] = torch.tensor(t)
        mask[b, :len(t)] = True
    return x, z, mask, source


ELEMENT_INDEX = {"H": 0, "C": 1, "N": 2, "O": 3, "F": 4}


# ------------------------------------------------------------------------------------- the models
class Ours:
    """diffusekit's molecule EGNN and process, trained as `DiffusionModule` trains it."""

    def __init__(self, hidden: int, layers: int, x, z, mask, device) -> None:
        from diffusekit.core.app.training.module import EMA
        from diffusekit.core.process import GaussianDiffusion
        from diffusekit.domains.molecules.network import MoleculeEGNN

        one_hot = torch.nn.functional.one_hot(z, N_TYPES).float() * 0.25
        charge = torch.tensor(CHARGES)[z][..., None] * 0.1
        x0 = torch.cat([x, one_hot, charge], -1) * mask[..., None]
        self.batch = {"x0": x0.to(device), "mask": mask.to(device),
                      "cond": {"node_mask": mask.to(device)}}
        self.network = MoleculeEGNN(n_features=6, hidden=hidden, n_layers=layers).to(device)
        self.process = GaussianDiffusion(schedule="vp_polynomial", prediction="eps",
                                         noise_input="t", weighting="eps_mse", space="zero_com")
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=1e-4)
        self.ema = EMA(self.network, 0.9999).to(device)
        self.noised = self.batch["x0"] + 0.5 * torch.randn_like(self.batch["x0"]) * mask[
            ..., None].to(device)
        self.t = torch.full((x.shape[0],), 0.5, device=device)

    def step(self) -> None:
        loss = self.process.training_loss(self.network, self.batch).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 1.0)
        self.optimizer.step()
        self.ema.update(self.network)

    def network_only(self) -> None:
        out = self.network(self.noised, self.t, node_mask=self.batch["mask"])
        self.network.zero_grad(set_to_none=True)
        out.pow(2).sum().backward()


class EDM:
    """EDM's `EGNN_dynamics_QM9` inside its `EnVariationalDiffusion`, trained as its
    `train_test.train_epoch` does (with a fixed clipping norm instead of its running queue)."""

    def __init__(self, checkout: Path, hidden: int, layers: int, x, z, mask, device) -> None:
        sys.path.insert(0, str(checkout))
        models = importlib.import_module("egnn.models")
        diffusion = importlib.import_module("equivariant_diffusion.en_diffusion")
        utils = importlib.import_module("equivariant_diffusion.utils")
        b, n = mask.shape
        node_mask = mask.float()[..., None].to(device)
        edge = (mask[:, None, :] & mask[:, :, None] & ~torch.eye(n, dtype=torch.bool)[None])
        self.edge_mask = edge.float().reshape(b * n * n, 1).to(device)
        self.x, self.node_mask = x.to(device), node_mask
        self.h = {"categorical": torch.nn.functional.one_hot(z, N_TYPES).float().to(device)
                  * node_mask,
                  "integer": torch.tensor(CHARGES)[z][..., None].to(device) * node_mask}
        dynamics = models.EGNN_dynamics_QM9(
            in_node_nf=N_TYPES + 1 + 1, context_node_nf=0, n_dims=3, device=device,
            hidden_nf=hidden, act_fn=torch.nn.SiLU(), n_layers=layers, attention=True,
            tanh=True, mode="egnn_dynamics", norm_constant=1, inv_sublayers=1,
            sin_embedding=False, normalization_factor=1, aggregation_method="sum")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its schedule
            self.model = diffusion.EnVariationalDiffusion(
                dynamics=dynamics, in_node_nf=N_TYPES + 1, n_dims=3, timesteps=1000,
                noise_schedule="polynomial_2", noise_precision=1e-5, loss_type="l2",
                norm_values=[1, 4, 10], include_charges=True).to(device)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, amsgrad=True,
                                           weight_decay=1e-12)
        self.ema_model = copy.deepcopy(self.model)
        self.ema = utils.EMA(0.9999)
        xh = torch.cat([self.x, self.h["categorical"] / 4, self.h["integer"] / 10], -1)
        self.noised = xh + 0.5 * torch.randn_like(xh) * node_mask
        self.noised[..., :3] = utils.remove_mean_with_mask(self.noised[..., :3], node_mask)
        self.t = torch.full((b, 1), 0.5, device=device)

    def step(self) -> None:
        b, n = self.node_mask.shape[:2]
        self.optimizer.zero_grad()
        nll = self.model(self.x, self.h, self.node_mask, self.edge_mask.view(b, n * n), None)
        nll.mean(0).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.ema.update_model_average(self.ema_model, self.model)

    def network_only(self) -> None:
        out = self.model.phi(self.noised, self.t, self.node_mask, self.edge_mask, None)
        self.model.zero_grad(set_to_none=True)
        out.pow(2).sum().backward()


# ------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of `fn` (synchronised on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def interleaved(pairs: dict[str, tuple[Callable[[], None], Callable[[], None]]], repeats: int,
                device: torch.device) -> dict[str, dict[str, list[float]]]:
    """{what: {"ours": [s...], "edm": [s...]}}: one warm-up call of each, then `repeats` rounds
    in which each is timed once, alternating which goes first."""
    out = {what: {"ours": [], "edm": []} for what in pairs}
    for what, (ours, edm) in pairs.items():
        for name, fn in (("ours", ours), ("edm", edm)):  # warm-up: allocation, EDM's edge lists
            print(f"{what} {name} warm-up: {timed(fn, device):.3f} s", flush=True)
        for r in range(repeats):
            order = (("ours", ours), ("edm", edm)) if r % 2 == 0 else (("edm", edm), ("ours", ours))
            for name, fn in order:
                out[what][name].append(timed(fn, device))
                print(f"{what} {name} {r}: {out[what][name][-1]:.3f} s", flush=True)
    return out


def edm_revision(checkout: Path) -> str:
    """`git rev-parse HEAD` of the EDM checkout, else "unknown"."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edm", required=True, type=Path, help="a checkout of EDM's repository")
    parser.add_argument("--edm-revision", default=None,
                        help="EDM's commit, when the checkout is not a git repository")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", default="step",
                        help="what to time: step, network or step,network (default step)")
    parser.add_argument("--out", type=Path, default=results_io.RESULTS_DIR)
    args = parser.parse_args(argv)
    if not (args.edm / "egnn" / "models.py").is_file():
        print(f"error: {args.edm} is not a checkout of EDM's repository (no egnn/models.py)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    x, z, mask, source = qm9_batch(args.batch, args.seed)
    ours = Ours(args.hidden, args.layers, x, z, mask, device)
    edm = EDM(args.edm, args.hidden, args.layers, x, z, mask, device)
    pairs = {"step": (ours.step, edm.step), "network": (ours.network_only, edm.network_only)}
    wanted = [w.strip() for w in args.measure.split(",") if w.strip()]
    if not wanted or set(wanted) - set(pairs):
        print(f"error: --measure {args.measure!r}: choose from step, network", file=sys.stderr)
        return 2
    times = interleaved({w: pairs[w] for w in wanted}, args.repeats, device)
    metrics: dict[str, Any] = {
        "hidden": args.hidden, "layers": args.layers, "batch": args.batch,
        "atoms_padded": int(mask.shape[1]), "atoms_mean": round(float(mask.sum(1).float().mean()), 2),
        "data": source, "threads": args.threads, "device": args.device, "repeats": args.repeats,
        "parameters_ours": sum(p.numel() for p in ours.network.parameters()),
        "parameters_edm": sum(p.numel() for p in edm.model.dynamics.parameters()),
    }
    for what, pair in times.items():
        for name, values in pair.items():
            metrics[f"{what}_ms_{name}"] = round(1000 * statistics.median(values), 2)
            metrics[f"{what}_ms_{name}_all"] = [round(1000 * v, 2) for v in values]
        metrics[f"{what}_ratio"] = round(metrics[f"{what}_ms_ours"] / metrics[f"{what}_ms_edm"], 3)
    revision = args.edm_revision or edm_revision(args.edm)
    command = results_io.command_line().replace(str(args.edm), EDM_PLACEHOLDER)
    name = "egnn_throughput" if device.type == "cpu" else f"egnn_throughput_{device.type}"
    record = results_io.make_record(name, metrics,
                                    {"edm": {"repository": "ehoogeboom/e3_diffusion_for_molecules",
                                             "revision": revision}},
                                    command=command)
    rows = [[what, metrics[f"{what}_ms_ours"], metrics[f"{what}_ms_edm"], metrics[f"{what}_ratio"],
             round(1 / metrics[f"{what}_ratio"], 2)] for what in times]
    headers = ["what", "ours ms", "EDM ms", "ours / EDM", "EDM / ours (speed-up)"]
    body = (f"EGNN at {args.layers} layers x {args.hidden} wide, one batch of {args.batch} "
            f"{source} molecules ({metrics['atoms_mean']} atoms on average, padded to "
            f"{metrics['atoms_padded']}), {args.threads} thread(s) on {args.device}; medians of "
            f"{args.repeats} interleaved repetitions after a warm-up. EDM's code at revision "
            f"{revision[:12]}, imported from a checkout outside this repository "
            f"({EDM_PLACEHOLDER} in the command). Parameters: ours "
            f"{metrics['parameters_ours']:,}, EDM's {metrics['parameters_edm']:,}.\n\n"
            + results_io.markdown_table(headers, rows, 6))
    for path in results_io.write_results(record, body, args.out,
                                         title="EGNN training step: diffusekit against EDM"):
        print(f"wrote {path}")
    print(results_io.markdown_table(headers, rows, 6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
