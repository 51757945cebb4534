"""Input/output: atomic writes, snapshot and field formats."""
