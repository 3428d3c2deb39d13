"""The version of kale-magic, recorded in cache keys, marshal records and compiled pipelines."""

__version__ = "0.1.0"
