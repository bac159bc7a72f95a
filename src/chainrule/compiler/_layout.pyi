# For type checkers: the C extension built from _layout.c, which rewriting.py loads when it was
# built. Its functions are called from there only, so they are typed loosely.
from typing import Any

def __getattr__(name: str) -> Any: ...
