"""PyTorch: tensors (a Dataset) and modules, optimizers, schedulers (a Model) with ``torch.save``.

Models whose classes are defined in the notebook (``__main__``, typically a
``%%functions`` cell) are saved with dill as torch's pickle module, so the
class travels by value; tensors still go to torch's zip records, not into the
pickle.  Loading maps CUDA storages to the CPU when this process has no GPU.
"""

from __future__ import annotations

import pickle
import types

from . import hashing
from .base import Backend, library
from .pickling import FastPickler, NotebookObject

TORCH_FILE = "value.pt"
DILL_TORCH_FILE = "value.dill.pt"


def _pickle_module(pickler):
    """A stand-in for the ``pickle`` module whose ``Pickler`` torch subclasses."""
    return types.SimpleNamespace(__name__=pickle.__name__, Pickler=pickler, Unpickler=pickle.Unpickler,
                                 dump=pickle.dump, load=pickle.load)


def _dill_module():
    import dill

    class Pickler(dill.Pickler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, recurse=True, **kwargs)

    return types.SimpleNamespace(__name__="dill", __version__=dill.__version__, Pickler=Pickler,
                                 Unpickler=dill.Unpickler, dump=dill.dump, load=dill.load)


class _TorchBackend(Backend):
    priority = 100
    packages = {"torch": "torch"}

    def save(self, obj, directory):
        torch = self.require("torch")
        try:
            with hashing.create(directory / TORCH_FILE) as f:
                torch.save(obj, f, pickle_module=_pickle_module(FastPickler), pickle_protocol=5)
            return [TORCH_FILE]
        except NotebookObject:
            (directory / TORCH_FILE).unlink()
        with hashing.create(directory / DILL_TORCH_FILE) as f:
            torch.save(obj, f, pickle_module=_dill_module(), pickle_protocol=5)
        return [DILL_TORCH_FILE]

    def load(self, directory, record):
        torch = self.require("torch")
        by_value = DILL_TORCH_FILE in record["files"]
        return torch.load(
            directory / (DILL_TORCH_FILE if by_value else TORCH_FILE),
            map_location=None if torch.cuda.is_available() else "cpu",
            pickle_module=_dill_module() if by_value else pickle,
            weights_only=False,  # our own file, checksum verified; modules need full unpickling
        )


class TorchTensorBackend(_TorchBackend):
    """``torch.Tensor`` (and ``nn.Parameter``): data, so a KFP Dataset."""

    name = "torch-tensor"
    artifact_type = "Dataset"

    def handles(self, obj):
        torch = library("torch")
        return torch is not None and isinstance(obj, torch.Tensor)

    def size(self, obj):
        return obj.nelement() * obj.element_size()


class TorchModelBackend(_TorchBackend):
    """``nn.Module``, optimizers, learning-rate schedulers and state dicts: a KFP Model.

    A dict counts as a state dict when its first value is a tensor (checked
    shallowly: plan time must not walk containers).
    """

    name = "torch"
    artifact_type = "Model"

    def handles(self, obj):
        torch = library("torch")
        if torch is None:
            return False
        if isinstance(obj, dict):
            return bool(obj) and isinstance(next(iter(obj.values())), torch.Tensor)
        return isinstance(obj, (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))
