"""The ``kale-magic`` command (``kale_magic.cli:main``) and headless notebook execution."""


def main(argv: list[str] | None = None) -> int:
    from .commands import main as run_command

    return run_command(argv)
