"""``make demo``: fetch the real model zoo and show what filterdb reads from it."""
from __future__ import annotations

import sys


def main() -> int:
    from .cli import main as cli

    print("== filterdb zoo fetch", flush=True)
    rc = cli(["zoo", "fetch"])
    if rc:
        return rc
    from .zoo import CATALOG, model_path

    for m in CATALOG:
        print(f"\n== filterdb inspect {m.id}", flush=True)
        cli(["inspect", str(model_path(m))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
