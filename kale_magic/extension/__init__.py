"""The IPython surface: the ``Kale`` magics, their argument parsers, finding the notebook file."""
