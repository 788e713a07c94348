"""diffusekit.core: the domain-agnostic diffusion engine.

Importing it needs torch only. Modules:

    schedules          noise schedules alpha(t), sigma(t), log-SNR, and time grids
    parameterization   the denoiser contract D(x, t, **cond) -> x0_hat and its adapters
    spaces             noise spaces: Euclidean, Masked, ZeroCoM
    losses             denoising loss, weightings, training time samplers
    samplers           pure sampler functions, one signature, one registry
    discrete           masked (absorbing) and uniform discrete diffusion
    process            GaussianDiffusion: the built parts a trainer and a sampler need
    editing            SDEdit: any sampler started from a given sample perturbed to t0
    inpainting         fill the unknown part of a partly known state with any sampler: replacement,
                       RePaint (resampling with jumps), zero-CoM frames for molecules
    distillation       consistency distillation: the boundary-parameterised student, its loss
                       (any sampler as the teacher's ODE step; guidance scale as an input)
    analytic           a Gaussian mixture with an exact denoiser, sliced Wasserstein
    registry           the name -> component tables everything is chosen from

The application layer (configuration, training, the command line, benchmark records, data
sources) lives in the sub-package `app` on top of the engine; no engine module imports it, nor
`diffusekit.plugins` or a domain (tests/test_import_graph.py checks this).
"""
