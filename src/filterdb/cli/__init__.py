"""The ``filterdb`` command line: one module per group of subcommands.

Each module in this package defines ``register(subparsers)``, adding its subcommands
with ``parser.set_defaults(func=...)``; ``func(args)`` returns the exit code.
User errors (:class:`filterdb.FilterDBError`) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sqlite3
import sys

from ..errors import FilterDBError


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__  # lazy: start-up time (filterdb --help stays fast)

    parser = argparse.ArgumentParser(
        prog="filterdb",
        description="A queryable database of trained convolution filters: drift and degeneration.",
    )
    parser.add_argument("--version", action="version", version=f"filterdb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # _common, __main__
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FilterDBError as e:
        print(f"filterdb: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:  # the catalog, wherever a command read or wrote it
        from ..store.catalog import (
            catalog_error,  # lazy: start-up time (filterdb --help stays fast)
        )

        print(f"filterdb: error: {catalog_error(getattr(args, 'db', None) or 'DB', e)}",
              file=sys.stderr)
        return 2
    except OSError as e:
        from ..errors import (  # lazy: start-up time (filterdb --help stays fast)
            DiskFullError,
            is_disk_full,
        )

        if not is_disk_full(e):
            raise
        print(f"filterdb: error: {DiskFullError(getattr(args, 'db', None) or e.filename or '.')}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("filterdb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
