"""Gradient-boosting boosters (XGBoost, LightGBM) in their libraries' own model formats.

The native formats load across library versions, unlike a pickle.  Their
scikit-learn wrappers (``XGBClassifier``, ``LGBMRegressor``, ...) are
estimators and go to the scikit-learn backend.  When neither library is
installed these backends never match and such values would go to dill.
"""

from __future__ import annotations

from .base import Backend, library

XGBOOST_FILE = "model.ubj"
LIGHTGBM_FILE = "model.txt"


class XGBoostBackend(Backend):
    """``xgboost.Booster`` as Universal Binary JSON (keeps feature names/types and attributes)."""

    name = "xgboost"
    artifact_type = "Model"
    priority = 100
    packages = {"xgboost": "xgboost"}

    def handles(self, obj):
        xgboost = library("xgboost")
        return xgboost is not None and isinstance(obj, xgboost.Booster)

    def save(self, obj, directory):
        obj.save_model(str(directory / XGBOOST_FILE))
        return [XGBOOST_FILE]

    def load(self, directory, record):
        booster = self.require("xgboost").Booster()
        booster.load_model(str(directory / XGBOOST_FILE))
        return booster


class LightGBMBackend(Backend):
    """``lightgbm.Booster`` as LightGBM's text model (all iterations, pandas categories included)."""

    name = "lightgbm"
    artifact_type = "Model"
    priority = 100
    packages = {"lightgbm": "lightgbm"}

    def handles(self, obj):
        lightgbm = library("lightgbm")
        return lightgbm is not None and isinstance(obj, lightgbm.Booster)

    def save(self, obj, directory):
        obj.save_model(str(directory / LIGHTGBM_FILE), num_iteration=-1)
        return [LIGHTGBM_FILE]

    def load(self, directory, record):
        return self.require("lightgbm").Booster(model_file=str(directory / LIGHTGBM_FILE))
