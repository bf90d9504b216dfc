"""Prefect flows of the pipeline stages; `python -m flows run NAME` is their entry (flows/__main__.py)."""

import multidigit  # noqa: F401  first: its multidigit/quiet.py sets TF and Prefect log levels
