"""diffusekit.core: the domain-agnostic diffusion engine.

Importing it needs torch only. Modules:

    schedules          noise schedules alpha(t), sigma(t), log-SNR, and time grids
    parameterization   the denoiser contract D(x, t, **cond) -> x0_hat and its adapters
    spaces             noise spaces: Euclidean, Masked, ZeroCoM
    losses             denoising loss, weightings, training time samplers
    samplers           pure sampler functions, one signature, one registry
    discrete           masked (absorbing) and uniform discrete diffusion
    process            GaussianDiffusion: the built parts a trainer and a sampler need
    analytic           a Gaussian mixture with an exact denoiser, sliced Wasserstein
    registry           the name -> component tables everything is chosen from

`training`, `config` and `cli` (Lightning, OmegaConf, click) are imported only when used.
"""
