"""`python -m app ...`: the operator commands (`app.ops.cli.main`)."""

from app.ops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
