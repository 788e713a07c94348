"""Predict, then regenerate: a one-step predictor in front of a conditional diffusion.

Two published recipes share one shape: "predict and refine" for image restoration (Whang et al.
2022, "Deblurring via Stochastic Refinement", Sec. 3) and StoRM for speech enhancement
(Lemercier et al. 2023, "StoRM: A Diffusion-based Stochastic Regeneration Model for Speech
Enhancement and Dereverberation", Sec. III). A predictor g maps the degraded input y to an
estimate y_hat = g(y) in one call (a regression, the conditional mean); a diffusion model,
conditioned on y_hat, draws what the regression averaged away. Training is joint:

    L = L_diffusion(x0 | sg(y_hat)) + w * |y_hat - x0|^2 / (n s^2)        (StoRM, eq. 10)

with sg a stop-gradient: the diffusion loss never trains g, so g is exactly a regression model of
the same network trained for the same steps, and "what diffusion adds over regression" is read
off one model. The domains supply how g is called and how the diffusion's batch is built around
y_hat (a residual x0 - y_hat, a start near y_hat); this module holds what they share:

    PredictorDenoiser(predictor, denoiser)    both networks as one module (one checkpoint, one EMA)
    regeneration_loss(...)                    the joint loss above, [B]
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class PredictorDenoiser(nn.Module):
    """The two networks of predict-then-regenerate: `predictor` (the one-step regression g) and
    `denoiser` (the diffusion model conditioned on g's estimate). Calling the pair itself is an
    error: a process calls the member it means."""

    def __init__(self, predictor: nn.Module, denoiser: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor
        self.denoiser = denoiser

    def forward(self, *args, **kwargs) -> Tensor:
        raise TypeError("PredictorDenoiser is called through its .predictor and .denoiser")


def regeneration_loss(estimate: Tensor, x0: Tensor,
                      diffusion_loss: Callable[[Tensor], Tensor], predictor_weight: float = 1.0,
                      scale: float = 1.0, power: float = 2.0) -> Tensor:
    """[B] L_diffusion(sg(estimate)) + predictor_weight * mean(|estimate - x0| / scale)^power.

    estimate: [B, ...] the predictor's output g(y), with its graph (the error term trains g);
    x0: [B, ...] the clean data; diffusion_loss(base) -> [B]: the diffusion's loss given the
    predictor's estimate `base` (detached here, so it never reaches g); scale: the predictor's
    error is measured in units of `scale` (a domain's residual scale), as its regression is;
    power: 2 (StoRM's MSE: g learns the conditional mean) or 1 (absolute error: g learns the
    conditional median, what an L1 score rewards)."""
    if power <= 0:
        raise ValueError(f"the predictor's error power must be > 0, got {power}")
    predictor_error = ((estimate - x0) / scale).abs().pow(power).flatten(1).mean(1)
    return diffusion_loss(estimate.detach()) + predictor_weight * predictor_error
