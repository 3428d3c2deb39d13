"""What a notebook file's sources say, without a kernel: the annotations its cells hold and the plan
they make (static.py), and a notebook annotated with Kale's cell tags converted to the magics
(convert.py, katib.py).  The command line plans and converts through here; it sits above the magics
(whose option parsers and settings it reuses) and below ``cli/``.
"""
