"""The example domain's metrics: how close generated 2-D points are to held-out data.

* Sliced 2-Wasserstein distance (Rabin et al. 2011; `diffusekit.core.analytic.sliced_wasserstein`),
  pooled over all points and per shape (samples of label i against held-out points of label i).
  It is in data units; `sw_floor` is the same distance between the held-out points and a fresh
  draw of the true distribution, i.e. what a perfect model scores at this sample size.
* k-NN precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
  for Assessing Generative Models", eq. 1-3): precision is the fraction of samples inside the
  data manifold estimate (the union of balls around each reference point reaching its k-th
  nearest reference neighbour), recall the same with the roles swapped. Low precision means
  samples off the shapes; low recall, shapes (or parts) the model misses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from diffusekit.core.analytic import sliced_wasserstein


def knn_radii(points: Tensor, k: int) -> Tensor:
    """[N] distance of each point to its k-th nearest neighbour among the others. points: [N, D]."""
    d = torch.cdist(points, points)
    return d.kthvalue(k + 1, dim=1).values  # the 1st "neighbour" is the point itself (d = 0)


def manifold_coverage(queries: Tensor, support: Tensor, k: int) -> Tensor:
    """Fraction of `queries` [M, D] inside the k-NN ball of some `support` point [N, D]
    (Kynkäänniemi et al. 2019, eq. 2: f(phi, Phi) = 1 iff |phi - phi'| <= NN_k(phi') for some phi')."""
    radii = knn_radii(support, k)  # [N]
    inside = torch.cdist(queries, support) <= radii[None]  # [M, N]
    return inside.any(dim=1).double().mean()


def precision_recall(samples: Tensor, reference: Tensor, k: int = 3) -> dict[str, float]:
    """k-NN precision (samples in the data manifold) and recall (data in the sample manifold)."""
    samples, reference = samples.double(), reference.double()
    return {"precision": float(manifold_coverage(samples, reference, k)),
            "recall": float(manifold_coverage(reference, samples, k))}


def sliced_wasserstein_by_label(samples: Tensor, reference: Tensor, labels: Tensor | None,
                                shapes: Sequence[str], n_projections: int = 256,
                                seed: int = 0) -> dict[str, float]:
    """{"sw": pooled, "sw_<shape>": per shape} sliced W2 between samples and reference, both
    [N, 2] with the same labels [N] (label i = shapes[i]); None labels: the pooled value only."""
    def sw(a: Tensor, b: Tensor) -> float:
        generator = torch.Generator().manual_seed(seed)  # the same directions for every call
        return float(sliced_wasserstein(a, b, n_projections, generator=generator))

    out = {"sw": sw(samples, reference)}
    if labels is not None:
        for i, name in enumerate(shapes):
            where = labels == i
            if int(where.sum()) >= 2:
                out[f"sw_{name}"] = sw(samples[where], reference[where])
    return out
