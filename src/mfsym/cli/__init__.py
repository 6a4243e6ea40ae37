"""The ``mfsym`` command line: one experiment, and what a result file records.

``mfsym train`` trains one setting (one teacher, scheme, seed and N) of a configuration
through the engine and writes its run file; ``mfsym info`` prints a result file's
provenance after verifying its checksum.  A thin layer over :mod:`mfsym.pipeline` and
:mod:`mfsym.records`: every error is printed as one line naming the bad value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import info, train

COMMANDS = {"train": train, "info": info}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, pointing to ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="mfsym", description="One experiment of the mean-field symmetry study, "
                  "and what a result file records.")
    sub = top.add_subparsers(dest="command", metavar="{train,info}", parser_class=_Parser)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return top


def one_line(err: BaseException) -> str:
    """An exception as one line: its message's lines joined with "; "."""
    text = " ".join(str(err).split("\n  ")).replace("\n", "; ").strip()
    return text or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad arguments)."""
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print(f"mfsym {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the command line reports, never a traceback
        print(f"mfsym {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
