"""Prefect flow of the `export` DVC stage: convert + check + publish the stage-3 detector, then register it.

One task wraps `multidigit.export.main` (gate re-check, TF.js conversion, Python parity and mAP check,
manifest, MLflow registration and the champion rule). Nothing here computes.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from multidigit import export
from multidigit.constants import DEFAULT_PARAMS_FILE


@task(name="export-tfjs", cache_policy=NO_CACHE)
def export_task(params: str) -> str:
    """Export the stage-3 detector; returns the published version folder."""
    return str(export.main(params))


@flow(name="export")
def export_flow(params: str = str(DEFAULT_PARAMS_FILE)) -> str:
    """Export, check and register one TF.js version of models/stage3/detector.keras.

    Args:
        params: the params YAML.
    Returns:
        The published folder, models/tfjs/<version>.
    """
    return export_task(params)
