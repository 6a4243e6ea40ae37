"""What trained the runs a results file holds.

A trained stack records the force kernel, the float type and the device it ran on (the
``backend``, ``dtype`` and ``device`` fields of :class:`mfsym.engine.training.StackResult`);
a results file keeps each as the string variable ``training_<field>``, whose long name is
:data:`TRAINED_BY`, and the distinct values as the attribute of the same name
(:func:`distinct`).  Kept apart from :mod:`mfsym.records.results`, which training jobs
import, so that naming a variable does not change the training's source hash.
"""

from __future__ import annotations

import numpy as np

#: StackResult field → long name of the variable ``training_<field>``.
TRAINED_BY = {"backend": "force kernel that trained the runs (after any fallback)",
              "dtype": "floating-point type of the training",
              "device": "torch device of the training"}


def distinct(values) -> str:
    """The distinct strings of ``values`` (any shape), sorted and joined by " | "."""
    return " | ".join(sorted(set(np.asarray(values).ravel())))
