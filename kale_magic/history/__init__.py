"""The run registry (``.kale/runs.db``) and the ``%kale_runs`` views over it."""
