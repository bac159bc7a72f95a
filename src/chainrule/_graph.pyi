# For type checkers: the C extension built from _graph.c, which engine.py loads when it was built
# (see the end of engine.py). Its functions are called from there only, so they are typed loosely.
from typing import Any

def __getattr__(name: str) -> Any: ...
