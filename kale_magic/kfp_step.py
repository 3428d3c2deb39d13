"""Old path of the component entry point, imported by pipelines compiled before the package was layered."""

from .engines.kfp.component import decode, run_component  # noqa: F401
