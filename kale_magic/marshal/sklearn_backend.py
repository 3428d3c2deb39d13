"""scikit-learn: fitted estimators and pipelines with joblib (arrays stored raw, not pickled).

Custom transformers defined in the notebook are classes in ``__main__``;
joblib would store them by reference, so then the model goes to dill (still
under this backend, still a KFP Model).
"""

from __future__ import annotations

from . import hashing
from .base import Backend, library
from .pickling import MainGuard, NotebookObject, dump_exact, load_exact

JOBLIB_FILE = "model.joblib"
DILL_STEM = "model"


def _joblib_pickler(joblib_numpy_pickle):
    class Pickler(MainGuard, joblib_numpy_pickle.NumpyPickler):
        """joblib's pickler (arrays written raw), guarded against notebook objects."""

    return Pickler


class SklearnBackend(Backend):
    """Any ``sklearn.base.BaseEstimator`` (including xgboost/lightgbm's sklearn wrappers)."""

    name = "sklearn"
    artifact_type = "Model"
    priority = 100
    packages = {"sklearn": "scikit-learn", "joblib": "joblib"}

    def handles(self, obj):
        base = library("sklearn.base")
        return base is not None and isinstance(obj, base.BaseEstimator)

    def save(self, obj, directory):
        numpy_pickle = self.require("joblib.numpy_pickle")
        try:
            with hashing.create(directory / JOBLIB_FILE) as f:
                _joblib_pickler(numpy_pickle)(f, protocol=5).dump(obj)
            return [JOBLIB_FILE]
        except NotebookObject:
            (directory / JOBLIB_FILE).unlink()
            return [dump_exact(obj, directory, DILL_STEM)]

    def load(self, directory, record):
        self.require("sklearn")
        if JOBLIB_FILE not in record["files"]:
            return load_exact(directory, record, DILL_STEM)
        return self.require("joblib").load(directory / JOBLIB_FILE)
