"""Everything that touches Redis: key names (keys), Lua scripts (scripts), commands (store).

A regular package (not a namespace one) so that `pip install .` and the wheel ship it:
setuptools' package finder skips a directory without this file.
"""
