"""The digits domain's metrics: a small CNN digit classifier trained on the train split, the
Frechet distance of its penultimate features ("classifier FD") and its accuracy on
class-conditional samples ("label accuracy").

Classifier FD is FID's formula (Heusel et al. 2017) on the classifier's features instead of
Inception's: with (mu_1, S_1) and (mu_2, S_2) the mean and covariance of two feature sets,

    FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^1/2 S_2 S_1^1/2)^1/2)

(the Frechet / 2-Wasserstein distance of two Gaussians, Dowson & Landau 1982). The trace of the
matrix square root is computed from an eigendecomposition: S_1^1/2 = V diag(sqrt(l)) V^T from
eigh(S_1), then tr(M^1/2) = sum sqrt(eig(M)) for the symmetric PSD M = S_1^1/2 S_2 S_1^1/2, in
float64 with negative round-off eigenvalues clipped to 0. Equal sets give 0.

The classifier is cached in the data cache ($DIFFUSEKIT_DATA/digits/classifier-<hash>.pt),
keyed by a SHA-256 over the training digits, their labels and the training recipe, beside its
test accuracy; a change of data or recipe trains a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusekit.core.app.config import data_cache
from diffusekit.core.errors import DataError

log = logging.getLogger(__name__)


class DigitClassifier(nn.Module):
    """x [B, 1, S, S] in [-1, 1] -> logits [B, n_classes]; `features(x)` -> [B, feature_dim],
    the penultimate layer (what classifier FD compares). Two conv stages (32, 64 channels, each
    two 3x3 convs + BatchNorm + ReLU + 2x2 max-pool), global average pooling, a Linear to
    `feature_dim` with ReLU, dropout, a Linear to the classes."""

    def __init__(self, n_classes: int = 10, feature_dim: int = 64, in_channels: int = 1) -> None:
        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
                                 nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(stage(in_channels, 32), stage(32, 64))
        self.embed = nn.Sequential(nn.Flatten(), nn.LazyLinear(feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(feature_dim, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.embed(self.body(x.float()))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.dropout(self.features(x)))


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """FD of two Gaussians N(mu1 [D], cov1 [D, D]) and N(mu2, cov2) (formula in the module
    docstring), computed in float64."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    l1, v1 = torch.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = v1 @ torch.diag(l1.clamp_min(0).sqrt()) @ v1.T  # S_1^1/2
    middle = root1 @ cov2 @ root1
    eig = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0)
    fd = (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2.0 * eig.sqrt().sum()
    return float(fd.clamp_min(0))


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """[N, D] -> (mean [D], unbiased covariance [D, D]) in float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def feature_fd(a: Tensor, b: Tensor) -> float:
    """FD between two feature sets [N, D] and [M, D]."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


@torch.no_grad()
def classify(classifier: DigitClassifier, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(features [N, D], predicted labels [N]) of images x [N, 1, S, S] in [-1, 1]."""
    classifier.eval()
    feats, preds = [], []
    device = next(classifier.parameters()).device
    for chunk in x.split(batch_size):
        f = classifier.features(chunk.to(device).clamp(-1, 1))
        feats.append(f.cpu())
        preds.append(classifier.out(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def label_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Fraction of predicted labels [N] equal to the intended labels [N]."""
    return float((predicted.cpu() == labels.cpu()).double().mean())


def _shift(x: Tensor, generator: torch.Generator, max_shift: int = 2) -> Tensor:
    """Random integer translations of up to `max_shift` pixels (background -1 filled in)."""
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def train_classifier(x: Tensor, labels: Tensor, n_classes: int, *, epochs: int = 4,
                     batch_size: int = 128, lr: float = 2e-3, feature_dim: int = 64,
                     seed: int = 0, device: str = "cpu") -> DigitClassifier:
    """A `DigitClassifier` trained on x [N, 1, S, S], labels [N] with AdamW, a one-cycle cosine
    learning rate and random shifts of up to 2 pixels."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier(n_classes, feature_dim, x.shape[1]).to(device)
    model(x[:2].to(device))  # materialise the lazy layer
    steps = epochs * max(1, len(x) // batch_size)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps)
    model.train()
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            xb = _shift(x[idx], generator).to(device)
            loss = F.cross_entropy(model(xb), labels[idx].to(device))
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            step += 1
    return model.eval()


def classifier_key(x: Tensor, labels: Tensor, recipe: dict[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the training digits, labels and recipe."""
    digest = hashlib.sha256()
    digest.update(x.float().numpy().tobytes())
    digest.update(labels.long().numpy().tobytes())
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def cached_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], n_classes: int,
                      recipe: dict[str, Any], folder: Path | None = None,
                      device: str = "cpu") -> tuple[DigitClassifier, dict[str, Any]]:
    """The classifier of `recipe` (train_classifier's keyword arguments) on the train split,
    from the cache when there, else trained and cached; with its record {"key", "test_accuracy",
    "n_train", "n_test", "recipe"} (test accuracy on the test split)."""
    if train[1] is None:
        raise DataError("the digit classifier needs labelled digits (the data is unlabelled)")
    folder = Path(folder) if folder is not None else data_cache("digits")
    key = classifier_key(train[0], train[1], {**recipe, "n_classes": n_classes})
    weights, meta = folder / f"classifier-{key}.pt", folder / f"classifier-{key}.json"
    model = DigitClassifier(n_classes, int(recipe.get("feature_dim", 64)), train[0].shape[1])
    model(train[0][:2])
    if weights.is_file() and meta.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.to(device).eval(), json.loads(meta.read_text())
    log.info("training the digit classifier %s on %d digits", key, len(train[0]))
    model = train_classifier(train[0], train[1], n_classes, device=device, **recipe)
    _, predicted = classify(model, test[0])
    record = {"key": key, "test_accuracy": label_accuracy(predicted, test[1]),
              "n_train": len(train[0]), "n_test": len(test[0]), "recipe": recipe}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, weights)
    meta.write_text(json.dumps(record, indent=2))
    return model, record


def sample_scores(classifier: DigitClassifier, samples: Tensor, labels: Tensor | None,
                  reference: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
    """{"label_accuracy"} of samples [N, 1, S, S] against their intended labels [N], and
    {"classifier_fd"} against reference (mean [D], covariance [D, D]) features when given."""
    features, predicted = classify(classifier, samples)
    out: dict[str, float] = {}
    if labels is not None:
        out["label_accuracy"] = label_accuracy(predicted, labels)
    if reference is not None:
        out["classifier_fd"] = frechet_distance(*feature_statistics(features), *reference)
    return out


def pixel_statistics(samples: Tensor) -> dict[str, float]:
    """Cheap sanity numbers of samples in [-1, 1]: mean ink (fraction of pixels above 0)."""
    return {"ink_fraction": float((samples > 0).float().mean())}


def balanced_labels(n: int, n_classes: int) -> Tensor:
    """[n] labels 0, 1, ..., n_classes - 1, 0, 1, ... (every class n / n_classes times)."""
    return torch.arange(n) % n_classes


def as_numpy_grid(images: Tensor, columns: int) -> np.ndarray:
    """[N, 1, S, S] in [-1, 1] -> uint8 [rows S, columns S] mosaic, row-major, black padding."""
    n, _, s, _ = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * s, columns * s), dtype=np.uint8)
    pixels = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = pixels[i]
    return grid
