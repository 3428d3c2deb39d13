"""The annotation language and its IPython surface: the ``Kale`` magics, their argument parsers,
finding the notebook file, reading a notebook's annotations without a kernel, converting Kale's tags.
"""
