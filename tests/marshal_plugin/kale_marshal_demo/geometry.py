"""The library type the backend knows how to save."""


class Point:
    def __init__(self, x, y, label=""):
        self.x, self.y, self.label = x, y, label

    def __eq__(self, other):
        return type(other) is type(self) and (self.x, self.y, self.label) == (other.x, other.y, other.label)

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r}, {self.label!r})"


class LabelledPoint(Point):
    """A subclass: the backend handles it too (handles() follows the MRO)."""
