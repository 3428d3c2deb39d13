"""What runs inside a step's own process: its generated notebook and the runtime that executes it."""
