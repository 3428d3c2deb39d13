"""Old path of the warm worker server (``python -m kale_magic.engines.workers``)."""

import sys

from .local.workers import serve

if __name__ == "__main__":
    serve(sys.argv[1:])
