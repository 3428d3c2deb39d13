"""What the ``sh -c`` install command of every compiled task receives from ``Kfp.packages`` and
``Kfp.pip_index_urls``: checked when the settings are read, shell-quoted when they are written.

kfp writes index URLs into that command as they are and each package inside Python's ``repr``
quotes, so ``;``, ``$(…)`` or a backtick in a setting would run in every pod of the pipeline.
A package must be a requirement as pip reads it (PEP 508, checked with ``packaging``) holding no
control character, no whitespace but spaces, no ``'``, ``\\``, ``$`` or backtick; an index must be
an http(s) URL with no whitespace, quote or shell metacharacter at all.  What reaches the command
line is then quoted by :func:`kfp_arguments`: URLs with :func:`shlex.quote`, packages by kfp's own
single quotes, which the check makes exactly :func:`shlex.quote`'s.
"""

from __future__ import annotations

import re
import shlex

_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#\[\]@!%+,=-]+")  # no whitespace, quotes or $ ` ; & | < > ( ) * \
_PACKAGE_REFUSED = re.compile(r"""[\s'\\$`\x00-\x1f\x7f]""")  # spaces are fine: pip reads one argument


def check_package(text: str) -> str:
    """``text`` if pip can read it as one requirement and a shell cannot read more into it; ValueError says why."""
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(text, str) or _PACKAGE_REFUSED.search(text.replace(" ", "")) or not text.strip():
        raise ValueError("give a requirement such as 'pandas>=2' or 'torch==2.3.1; sys_platform == \"linux\"' "
                         "(no ', \\, $ or `; markers quote with \")")
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"not a requirement pip can read ({str(exc).splitlines()[0]}); give one such as "
                         "'pandas>=2'") from None
    return text


def check_index_url(text: str) -> str:
    """``text`` if it is an http(s) URL with nothing a shell would act on; ValueError says what is accepted."""
    if not isinstance(text, str) or not _URL.fullmatch(text):
        raise ValueError("give an http(s) URL of a package index, such as https://pypi.example.com/simple "
                         "(no spaces, quotes or shell characters such as $ ` ; & |)")
    return text


def check_setting(setting: str, values) -> list[str]:
    """``values`` of ``Kfp.packages`` or ``Kfp.pip_index_urls``; ValueError names the bad one and the fix."""
    check = check_package if setting == "packages" else check_index_url
    for value in values:
        try:
            check(value)
        except ValueError as exc:
            raise ValueError(f"Kfp.{setting}: {value!r}: {exc}.") from None
    return list(values)


def kfp_arguments(packages, index_urls) -> dict:
    """The ``packages_to_install`` and ``pip_index_urls`` to give ``kfp.dsl.component``, each as it must
    be for the command kfp writes: kfp puts URLs in as they are, so they go in shell-quoted."""
    for package in packages:
        check_package(package)  # kfp's repr quotes are shell quotes only for what this accepts
    return {"packages_to_install": list(packages) or None,
            "pip_index_urls": [shlex.quote(check_index_url(url)) for url in index_urls] or None}
