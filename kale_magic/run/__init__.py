"""One run in the kernel: ``%kale_run``'s tasks, the run's state, and the ``Run`` handle."""
