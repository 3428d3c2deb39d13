"""kale-magic: annotate notebook cells with magics, run them as a Kubeflow pipeline.

Importing this package must stay cheap (``%load_ext`` budget: 0.2 s), so nothing
heavy is imported here; the magics module pulls in only IPython and traitlets.
"""

from .version import __version__

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython):
    from .extension.magics import Kale

    magics = Kale(shell=ipython)  # also adds itself to ipython.configurables, so %config reaches it
    ipython.register_magics(magics)
    magics.attach()


def unload_ipython_extension(ipython):
    """Undo everything loading did: the magics, the event hook, the configurable, the warm worker."""
    magics = ipython.magics_manager.registry.pop("Kale", None)
    if magics is None:
        return
    magics.detach()
    for kind in ("line", "cell"):
        table = ipython.magics_manager.magics[kind]
        for name in list(table):
            if getattr(table[name], "__self__", None) is magics:
                del table[name]
    if magics in ipython.configurables:
        ipython.configurables.remove(magics)
