"""The paper build's staging folder: which folders it may wipe.

The manuscript is built in a staging folder that is emptied before every build. Only a
folder the builder made may be emptied; the configuration check refuses any other before a
job runs, and the builder refuses it again before it deletes anything.
"""

from __future__ import annotations

from pathlib import Path

#: File the builder writes into its staging folder; only a folder holding it is ever wiped.
STAGING_MARKER = ".mfsym-paper-staging"


def staging_refusal(build_dir) -> str | None:
    """Why ``build_dir`` must not be wiped as a staging folder, or None when it may be.

    Only a folder this builder created may be wiped: an empty or absent folder, or one with
    the :data:`STAGING_MARKER` file inside. Anything else (the checkout, the sources, the
    results) holds files the build did not put there.
    """
    path = Path(build_dir)
    if path.is_symlink():
        return "is a symbolic link"
    if not path.exists():
        return None
    if not path.is_dir():
        return "is a file, not a folder"
    if (path / STAGING_MARKER).is_file() or not any(path.iterdir()):
        return None
    return f"holds files the paper build did not create (no {STAGING_MARKER} file inside)"
