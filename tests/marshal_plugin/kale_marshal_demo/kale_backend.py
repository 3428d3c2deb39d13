"""kale-magic backend for geometry points: JSON, written through kale's hashing writer.

Importing this module must stay cheap; the library module is looked up in
sys.modules (via ``library``) and imported only to load a value.
"""

import importlib
import json

from kale_magic.marshal import Backend, create, library, open_verified


class PointBackend(Backend):
    name = "demo-point"
    version = "2"
    artifact_type = "Dataset"
    priority = 60
    verifies_while_reading = True

    def handles(self, obj):
        geometry = library("kale_marshal_demo.geometry")
        return geometry is not None and isinstance(obj, geometry.Point)

    def save(self, obj, directory):
        payload = {"class": type(obj).__name__, "x": obj.x, "y": obj.y, "label": obj.label}
        with create(directory / "point.json") as f:
            f.write(json.dumps(payload).encode())
        return ["point.json"]

    def load(self, directory, record):
        geometry = importlib.import_module("kale_marshal_demo.geometry")
        with open_verified(directory, record, "point.json") as f:
            payload = json.loads(f.read())
            f.finish()
        cls = getattr(geometry, payload.pop("class"))
        return cls(**payload)
