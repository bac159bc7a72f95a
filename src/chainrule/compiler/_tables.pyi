# For type checkers: the C extension built from _tables.c (the table program, see native.py),
# loaded where it was built. Its functions are called from the compiler only: typed loosely.
from typing import Any

def __getattr__(name: str) -> Any: ...
