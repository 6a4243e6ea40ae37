"""Figures: one module per family; each reads result datasets and never trains.

* :mod:`.rmd` — RMD to the SI/WI laws and between schemes vs N (fig_rmd_*_init);
* :mod:`.particles` — trained particle clouds per scheme (fig_particles_<teacher>);
* :mod:`.deep` — the same RMD layout for the deep settings (fig_mlp_rmd_*, fig_resnet_rmd_*);
* :mod:`.curves` — training loss and population risk vs time (fig_loss_curves);
* :mod:`.rotation` — FA over K-point subgroups of a compact group (fig_fa_quadrature);
* :mod:`.saddle` — vanilla's escape from the saddle on E^G against N (fig_saddle_escape);
* :mod:`.style` — the shared look and the atomic PDF/PNG writer.
"""

from pathlib import Path


def module_file(name: str) -> str:
    """Path of the figure module ``name`` (a rule input, so editing it reruns its figure)."""
    path = Path(__file__).with_name(f"{name}.py")
    if not path.is_file():
        raise ValueError(f"no figure module {name!r} in {Path(__file__).parent.name}")
    return str(path)
