"""`make chaos`: faults under load, then an audit of lost and doubled events (chaos/run.py)."""
