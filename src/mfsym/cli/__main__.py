"""``python -m mfsym.cli``: the ``mfsym`` command line without installing the script."""

from . import main

raise SystemExit(main())
