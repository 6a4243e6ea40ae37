"""Cross-key rules of the study sections, checked before any job (:func:`check_all`'s
``checks``): the studies' own settings classes decide, so the pipeline states no rule twice.

Kept apart from :mod:`mfsym.pipeline.config` so that a training job, which imports that
module, does not import the studies (an edit of a study does not rerun the training).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..studies.noether import NoetherConfig


def noether_problems(config: Mapping) -> list[str]:
    """The ``noether:`` section's problems (e.g. ``momentum.shown_points`` not among
    ``orbit_points``), each naming the key, its value and what is allowed."""
    section = {k: v for k, v in (config.get("noether") or {}).items() if k != "resources"}
    try:
        NoetherConfig.from_dict(section)
    except ValueError as err:
        return [str(err)]
    return []


#: Every study check, in the order they are reported.
STUDY_CHECKS = (noether_problems,)
