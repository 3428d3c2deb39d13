"""A step's own environment variables and secrets (``%%step --env`` / ``--secret``).

On Kubeflow the compiler sets the variables on the step's container and mounts each
Kubernetes Secret key as a variable (kfp-kubernetes).  Locally the same variables are set
in the step's process, and a secret's value is read, when the run starts, from the kernel's
environment or else from the ``.env`` file beside the notebook.

A secret's value lives only in memory: it goes from here into the job handed to the
worker (over its pipe) and into the step's ``os.environ``; run files, the run store, the
cache and the panel see the secret's reference (name, key, variable), never its value.
The snapshot leaves ``.env`` files out for the same reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import KaleError

DOTENV = ".env"
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Kubernetes Secret name (DNS-1123 subdomain) and a key in its data.
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


@dataclass(frozen=True)
class SecretRef:
    """``--secret NAME[:KEY[=ENVVAR]]``: key KEY (default NAME) of Secret NAME as variable ENVVAR (default KEY)."""

    name: str
    key: str
    variable: str

    def __str__(self) -> str:
        return f"{self.name}:{self.key}={self.variable}"


def parse_env(text: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE[,KEY=VALUE]``; ValueError says what is accepted."""
    pairs = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not _VARIABLE.fullmatch(key.strip()):
            raise ValueError("write KEY=VALUE[,KEY=VALUE] with KEY a variable name (letters, digits, '_'), e.g. "
                             "--env LOG_LEVEL=debug,WORKERS=4 (a value with a comma needs its own --env)")
        pairs.append((key.strip(), value))
    return tuple(pairs)


def parse_secret(text: str) -> SecretRef:
    """``NAME[:KEY[=ENVVAR]]``; ValueError says what is accepted."""
    name, _, rest = text.partition(":")
    key, _, variable = rest.partition("=")
    key = key or name
    variable = variable or key
    if not _SECRET_NAME.fullmatch(name) or len(name) > 253:
        raise ValueError("NAME must be a Kubernetes Secret name (lowercase letters, digits, '-' and '.'); write "
                         "NAME[:KEY[=ENVVAR]], e.g. --secret openai:api-key=OPENAI_API_KEY")
    if not _SECRET_KEY.fullmatch(key):
        raise ValueError("KEY must be a key of the Secret (letters, digits, '-', '_' or '.')")
    if not _VARIABLE.fullmatch(variable):
        raise ValueError(f"'{variable}' is not a variable name; name the variable: --secret {name}:{key}=ENVVAR "
                         "(letters, digits and '_')")
    return SecretRef(name, key, variable)


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefix, quotes and ``#`` comments allowed), as docker and dotenv read them."""
    values = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return values
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class StepEnvironments:
    """The variables each step's process gets (``--env`` and resolved ``--secret``), and where secrets came from."""

    variables: dict[str, dict[str, str]]  # step -> variable -> value (secret values included: memory only)
    sources: dict[str, str]  # secret variable -> "the kernel's environment" or the .env path

    def summary(self) -> str:
        """Which source each secret came from (names only), for the Compile task's line."""
        by_source: dict[str, list[str]] = {}
        for variable, source in sorted(self.sources.items()):
            by_source.setdefault(source, []).append(variable)
        return "; ".join(f"secrets {', '.join(names)} from {source}" for source, names in by_source.items())


def resolve(plan, environ=None) -> StepEnvironments:
    """Every step's variables; a secret found neither in ``environ`` nor in the ``.env`` beside the notebook is
    a :class:`KaleError` naming the step, the secret and both places, raised before any step runs."""
    environ = os.environ if environ is None else environ
    folder = plan.notebook_path.parent if plan.notebook_path else Path.cwd()
    dotenv_path = folder / DOTENV
    dotenv = None
    variables: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for name, step in plan.steps.items():
        values = dict(step.options.env)
        for secret in step.options.secrets:
            if secret.variable in environ:
                values[secret.variable] = environ[secret.variable]
                sources[secret.variable] = "the kernel's environment"
                continue
            dotenv = read_dotenv(dotenv_path) if dotenv is None else dotenv
            if secret.variable not in dotenv:
                raise KaleError(f"step '{name}' needs secret {secret.name} (key {secret.key}) as "
                                f"{secret.variable}, which is neither in the kernel's environment nor in "
                                f"{dotenv_path}: add the line {secret.variable}=... to that file (or set the "
                                "variable before starting Jupyter).")
            values[secret.variable] = dotenv[secret.variable]
            sources[secret.variable] = str(dotenv_path)
        if values:
            variables[name] = values
    return StepEnvironments(variables, sources)
