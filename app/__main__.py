"""Operator commands: `python -m app migrate`."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s - %(message)s")

    from app.settings import SettingsError

    try:
        from app.settings import settings
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        from app.database import apply_migrations

        applied = apply_migrations(settings.database_url)
        print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
