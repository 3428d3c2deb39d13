"""A container image reference, checked the same way for ``%%step --image`` and ``Kfp.base_image``."""

from __future__ import annotations

import re

# A container image reference: [host[:port]/]path[:tag][@digest], as the distribution spec defines it.
_IMAGE = re.compile(r"""
    (?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?/)?
    [a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*
    (?::[\w][\w.-]{0,127})?
    (?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?
""", re.VERBOSE)


def check_image(text: str) -> str:
    """``text`` if it can name a container image; ValueError otherwise (also used for ``Kfp.base_image``)."""
    if len(text) > 255 or not _IMAGE.fullmatch(text):
        raise ValueError("give a container image reference, such as python:3.11 or "
                         "registry.example.com/team/image:tag (lowercase repository, no spaces)")
    return text
