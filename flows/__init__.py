"""Orchestration: Prefect flows over the pipeline stages, the `modhifi` CLI, the schedule."""
