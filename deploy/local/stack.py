#!/usr/bin/env python3
"""Kept so `python deploy/local/stack.py up` still works; the stack is `python -m deploy.local`."""
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[2])  # the repo root, not deploy/local/
    from deploy.local.cli import main
    sys.exit(main())
