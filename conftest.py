"""Loaded by pytest before it collects anything, for ``src``'s doctests.

With ``--import-mode=importlib`` pytest imports a module of ``src/chainrule`` by its file. If
the package is not imported yet, the package's own ``__init__`` then imports that same module a
second time, and the two copies' classes both register with the C loops (``_graph``), the
second replacing the first. Importing the package first makes pytest use its modules as they are.
"""

import chainrule  # noqa: F401
