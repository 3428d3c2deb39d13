"""The IPython surface: the ``Kale`` magics, their argument parsers, finding the notebook file a kernel
runs, a ``--foreach`` cell in the kernel.
"""
