"""Settings dataclasses built strictly from plain mappings (configuration values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields


def build_strict(cls, values: Mapping | None, message: str, error: type[Exception] = ValueError):
    """``cls(**values)``, refusing keys that are not fields of the dataclass ``cls``.

    ``message`` is formatted with ``unknown`` (the sorted unknown keys) and ``allowed``
    (the sorted field names) and raised as ``error``.
    """
    values = dict(values or {})
    allowed = sorted(f.name for f in fields(cls))
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise error(message.format(unknown=unknown, allowed=allowed))
    return cls(**values)
