"""Training schemes as transformations of the model seen by the loss (PAPER.md §4).

With ``out_{g,b} = Φ_N(g x_b)`` evaluated on the ``m`` views of each of the B samples:

* ``vanilla``: m = 1, the identity view; residual ``e_b = Φ_N(x_b) − y_b``.
* ``DA`` (``da_mode="random"``): m = 1, the view ``g_b x_b`` with g_b uniform in G per
  sample, target ``g_b y_b``.
* ``DA`` (``da_mode="orbit"``): m = |G|, all views; loss ``(1/|G|) Σ_g ‖Φ_N(g x) − g y‖²``.
* ``FA``: m = |G|; the model is ``Φ̂(x) = (1/|G|) Σ_g g⁻¹ Φ_N(g x)``.
* ``EA``: m = 1; the model uses the projected particles ``P_E θᵢ``; its drift and its noise
  are projected on E^G, so particles started on E^G stay there.

For the loss ``(1/B) Σ_b ‖Φ̂(x_b) − y_b‖²`` the cotangent ``c = ∂loss/∂out`` is

* residual type (vanilla, DA, EA): ``c_{g,b} = 2 e_{g,b} / (m B)``, ``e_{g,b} = out_{g,b} − g y_b``;
* FA: ``c_{g,b} = 2 g e_b / (m B)`` with ``e_b = (1/m) Σ_g gᵀ out_{g,b} − y_b``.

Each particle's force is then ``F_i = Σ_{g,b} J_i(g x_b)ᵀ c_{g,b}`` (mean-field scaling:
no 1/N).
"""

from __future__ import annotations

SCHEMES = ("vanilla", "DA", "FA", "EA")
DA_MODES = ("random", "orbit")
INITS = ("WI", "SI")
#: Scheme variants of the Noether studies → (engine scheme, DA mode).
SCHEME_VARIANTS = {
    "vanilla": ("vanilla", "random"),
    "DA": ("DA", "random"),
    "DA-orbit": ("DA", "orbit"),
    "FA": ("FA", "random"),
    "EA": ("EA", "random"),
}
#: How the Noether studies feed data: a fresh minibatch per step, the full fixed sample, or
#: the full sample closed under G.
TRAINING_MODES = ("online", "full_batch", "full_batch_symmetrized")


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {list(SCHEMES)}")
    return scheme


def uses_orbit(scheme: str, da_mode: str) -> bool:
    """True if the scheme evaluates the model on all |G| views of each sample."""
    return scheme == "FA" or (scheme == "DA" and da_mode == "orbit")


def projects_drift(scheme: str) -> bool:
    """EA constrains its particles to E^G: model, drift and noise are projected."""
    return scheme == "EA"


def projects_noise(scheme: str, init: str) -> bool:
    """Noise is projected on E^G for EA, and for every scheme from an SI start."""
    return scheme == "EA" or init == "SI"


def parse_pair(pair: str) -> tuple[str, str]:
    """A scheme pair ``"vanilla-DA"`` → ``("vanilla", "DA")``."""
    parts = str(pair).split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"scheme pair {pair!r} must read 'A-B' with two scheme names")
    return parts[0], parts[1]
