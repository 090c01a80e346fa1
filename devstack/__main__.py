"""``python -m devstack up|down|wipe|status|restart-postgres [--dir .stack]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devstack.settings import StackError
from devstack.stack import LocalStack
from experiments_dagster.core.paths import PROJECT_ROOT

STACK_DIR_ENV = "EXPERIMENTS_STACK_DIR"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "wipe", "status", "restart-postgres"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get(STACK_DIR_ENV) or PROJECT_ROOT / ".stack"),
        help=f"the stack's folder (default ${STACK_DIR_ENV} or <project>/.stack)",
    )
    args = parser.parse_args(argv)
    data = os.environ.get("EXPERIMENTS_DATA_DIR")
    stack = LocalStack(args.dir, data_dir=Path(data).resolve() if data else None)
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "wipe":
            stack.wipe()
        elif args.command == "restart-postgres":
            stack.restart_postgres()
        else:
            return 0 if stack.status() else 1
    except StackError as exc:
        print(f"stack {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
