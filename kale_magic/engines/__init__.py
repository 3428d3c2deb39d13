"""Engines run a plan and report progress into a RunState."""
