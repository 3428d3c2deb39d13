"""The local engine: each step in a process forked from a warm worker, independent steps at once."""
