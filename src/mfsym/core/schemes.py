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
#: Scheme labels → (engine scheme, DA mode): the Noether studies' variants; "DA-orbit" is
#: also a scheme of the grid (orbit-averaged DA next to random-g DA in one stack).
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


#: Labels a run may carry: the schemes and the variants that fix their DA mode.
SCHEME_LABELS = (*SCHEMES, *(v for v in SCHEME_VARIANTS if v not in SCHEMES))


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEME_LABELS:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {list(SCHEME_LABELS)}")
    return scheme


def resolve_scheme(label: str, da_mode: str) -> tuple[str, str]:
    """A run's scheme label → (engine scheme, DA mode).  A plain scheme takes the
    configured ``da_mode``; a variant ("DA-orbit") fixes its own."""
    check_scheme(label)
    if label in SCHEMES:
        return label, da_mode
    return SCHEME_VARIANTS[label]


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
    """A scheme pair ``"vanilla-DA"`` → ``("vanilla", "DA")``; a label with a hyphen of its
    own splits where both halves are scheme labels (``"vanilla-DA-orbit"``)."""
    text = str(pair)
    parts = text.split("-")
    for k in range(1, len(parts)):
        a, b = "-".join(parts[:k]), "-".join(parts[k:])
        if a in SCHEME_LABELS and b in SCHEME_LABELS:
            return a, b
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"scheme pair {pair!r} must read 'A-B' with two scheme names")
    return parts[0], parts[1]
