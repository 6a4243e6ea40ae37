"""mfsym: symmetries in overparametrised networks, a mean-field reproduction toolkit.

The library is layered; each folder imports only the folders listed before it:

1. ``records``  — atomic writes and the results schema (CF attributes, provenance);
2. ``core``     — groups and their fixed subspace E^G, units σ*, teachers, schemes;
3. ``engine``   — the one batched noisy-SGD trainer (:func:`train_stack`) and its kernels;
4. ``measure``  — exact optimal transport (W₂, RMD), per-run metrics, Noether diagnostics;
5. ``studies``  — the E^G discovery heuristic, the Noether studies and the deep settings
   (mlp ensemble, mean-ODE ResNet), built on the engine;
6. ``figures``  — one module per figure family; reads datasets, never trains;
7. ``paper``    — the manuscript's numbers, claims table and PDF build;
8. ``pipeline`` — configuration sections → the jobs of the Snakemake workflow;
9. ``cli``      — the ``mfsym`` command line (``mfsym train``, ``mfsym info``).

The names below are the public API: the engine, groups, units, teachers and transport.
They load on first use, so importing one layer does not import the others.
"""

from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "engine.training": ("train_stack", "TrainConfig", "RunSpec", "StackResult",
                        "TrainingDiverged", "initial_particles", "evaluation_inputs"),
    "core.groups": ("FiniteGroup", "GroupXY", "group_xy", "c2_swap", "cyclic_group",
                    "symmetric_group", "permutation_group", "generate", "permutation_matrix"),
    "engine.models": ("ResNet", "repeat_layers"),
    "core.units": ("Unit", "make_unit", "ACTIVATIONS", "UNITS", "ALL_UNITS"),
    "core.teachers": ("Teacher", "paper_teachers", "random_teacher", "TEACHER_KINDS"),
    "core.schemes": ("SCHEMES", "INITS"),
    "measure.transport": ("w2_squared", "rmd", "rmd2", "rmd_to_projected",
                          "rmd_to_symmetrized"),
}
_WHERE = {name: module for module, names in _PUBLIC.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'mfsym' has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
