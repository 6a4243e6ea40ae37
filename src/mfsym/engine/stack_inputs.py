"""The array arguments of :func:`mfsym.engine.training.train_stack`, checked before training.

Every array that reaches the engine from a caller (teacher clouds, initial clouds, the
evaluation and training samples, a replacement projector) must have its stated shape, hold
finite real numbers and belong to the stack; a ResNet needs N and every teacher cloud
divisible by its depth. A problem is a ``ValueError`` (``TypeError`` for a wrong container)
naming the argument: an input problem, never a training divergence.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .models import ResNet


def check_stack_arrays(group, unit, teachers, runs, n_particles: int, init_particles,
                       x_eval, x_train, subspace) -> None:
    """Check the arrays of one stack (shapes in terms of the group's D, dx; see above)."""
    for name in sorted({r.teacher for r in runs}):
        _check_input(f"teacher {name!r} particles", teachers[name].particles,
                     ("K", group.dim_z))
    if init_particles is not None:
        if not isinstance(init_particles, Mapping):
            raise TypeError(f"init_particles must map seed → (N, D) cloud, not "
                            f"{type(init_particles).__name__} {init_particles!r:.80}")
        unknown = sorted(set(init_particles) - {r.seed for r in runs}, key=repr)
        if unknown:
            raise ValueError(
                f"init_particles has clouds for seeds {unknown} that no run uses (the "
                f"runs' seeds: {sorted({r.seed for r in runs})}); a cloud is keyed by its "
                "run's seed"
            )
    for seed, cloud in (init_particles or {}).items():
        _check_input(f"init_particles[{seed}]", cloud, (n_particles, group.dim_z))
    if x_eval is not None:
        _check_input("x_eval", x_eval, ("n", group.dim_x))
    if x_train is not None:
        _check_input("x_train", x_train, ("n", group.dim_x))
    if subspace is not None:
        _check_input("subspace", subspace, (group.dim_z, group.dim_z))
        p = np.asarray(subspace, dtype=np.float64)
        if not (np.allclose(p, p.T, atol=1e-8) and np.allclose(p @ p, p, atol=1e-8)):
            raise ValueError(
                "subspace must be an orthogonal projector (symmetric, idempotent)"
            )
    _check_depth(unit, n_particles, teachers, runs)


def _check_depth(model, n_particles: int, teachers, runs) -> None:
    """A ResNet needs N and every teacher cloud divisible by its depth L."""
    if not isinstance(model, ResNet):
        return
    model.per_layer(n_particles)
    for name in sorted({r.teacher for r in runs}):
        k = np.asarray(teachers[name].particles).shape[0]
        if k % model.depth:
            raise ValueError(
                f"teacher {name!r} has {k} particles, not a multiple of the ResNet depth "
                f"L={model.depth} (repeat the cloud at every layer: models.repeat_layers)"
            )


def _check_input(name: str, value, shape: tuple) -> None:
    """``value`` is a finite array of ``shape`` (a str entry: any size ≥ 1, named so)."""
    arr = np.asarray(value)
    fits = arr.ndim == len(shape) and all(
        isinstance(want, str) or got == want for got, want in zip(arr.shape, shape, strict=False)
    )
    expected = "(" + ", ".join(str(w) for w in shape) + ")"
    if not fits:
        raise ValueError(f"{name} has shape {arr.shape}, expected {expected}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs at least one row")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (first at index {first}): "
            "an input problem, not a training divergence; fix the input"
        )
