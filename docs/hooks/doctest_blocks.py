"""An MkDocs hook: doctests in docstrings are shown as code in the API reference.

chainrule's docstrings carry runnable examples as bare doctest lines (``>>> a = Value(3.0)``),
which Markdown would read as nested block quotes, and whose printed lists (``[[4.0, 2.0], ...]``)
it would read as reference links. This hook adds a Markdown preprocessor, run before the
fenced-code one, that wraps each run of doctest lines, with the output that follows it up to
the next blank line, in a ``pycon`` fence. Lines already inside a fence are left alone.
"""

from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor
from mkdocs.plugins import event_priority

_FENCE = re.compile(r"^\s*(```|~~~)")
_PROMPT = re.compile(r"^(\s*)>>>( |$)")


class _DoctestFences(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        in_fence = False
        i = 0
        while i < len(lines):
            line = lines[i]
            if _FENCE.match(line):
                in_fence = not in_fence
            prompt = None if in_fence else _PROMPT.match(line)
            if prompt is None:
                out.append(line)
                i += 1
                continue
            indent = prompt.group(1)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
                i += 1
            out.extend(["", f"{indent}```pycon", *(indent + b for b in block), f"{indent}```", ""])
        return out


class DoctestFences(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 (Markdown's name)
        md.preprocessors.register(_DoctestFences(md), "chainrule_doctest_fences", 40)


@event_priority(100)  # before mkdocstrings reads the list of extensions
def on_config(config):
    config.markdown_extensions.append(DoctestFences())
    return config
