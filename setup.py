"""chainrule's C extensions: which to build, with which flags, and what to do when one fails.

Everything else about the package (its name, version, dependencies, package data) is in
pyproject.toml; this file only adds what a table there cannot say: flags chosen by the compiler
that will build, and a build that never fails the install. chainrule runs without any of the
three extensions (each has a Python or numpy twin), so a missing or failing C compiler prints
one warning per extension, naming it and what runs instead, and the install goes on.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off (GCC, Clang): no fused multiply-add, so that a product rounds on its own, as
# it does in Python and numpy: the tests compare the C loops with them bit for bit. MSVC (2022
# and later) does not contract under /fp:precise, and without /arch:AVX2 it has no FMA to emit.
# The optimisation level comes last, so it wins over Python's own.
# MSVC compiles C in its C89-style mode, where C99's restrict is spelled __restrict.
FLAGS = {
    "unix": ["-O2", "-ffp-contract=off"],  # GCC and Clang, on Linux and macOS
    "mingw32": ["-O2", "-ffp-contract=off"],
    "msvc": ["/O2", "/fp:precise", "/Drestrict=__restrict"],
}

# What chainrule uses instead of each extension when it is not built (the warning says so).
FALLBACK = {
    "chainrule._graph": "the engine's graph loops run in pure Python (several times slower)",
    "chainrule.compiler._tables": (
        "chainrule.compile builds its table program at run time where a C compiler can (Linux, "
        "macOS), else runs on its numpy backend"
    ),
    "chainrule.compiler._layout": "chainrule.compile lays out its tapes in Python (slower tracing)",
}


class build_ext_with_fallback(build_ext):
    """build_ext with per-compiler flags, where an extension that fails to build is reported
    and left out instead of failing the build."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # no compiler at all (MSVC missing on Windows, say)
            for extension in self.extensions:
                self._report(extension, error)

    def build_extensions(self):
        flags = FLAGS.get(self.compiler.compiler_type, [])
        for extension in self.extensions:
            extension.extra_compile_args = [*flags, *extension.extra_compile_args]
        super().build_extensions()

    def build_extension(self, extension):
        try:
            super().build_extension(extension)
        except Exception as error:
            self._report(extension, error)

    def _report(self, extension, error):
        reason = " ".join(str(error).split()) or type(error).__name__
        print(
            f"WARNING: chainrule: the C extension {extension.name} was not built ({reason}); "
            f"chainrule works without it: {FALLBACK[extension.name]}.",
            file=sys.stderr,
            flush=True,
        )


def extension(name: str, source: str, depends: list[str]) -> Extension:
    # optional: setuptools then copies a built extension into the source tree for
    # `pip install -e .` only where it was built.
    return Extension(name, [source], depends=depends, optional=True)


setup(
    ext_modules=[
        # engine.py's hottest loops in C (see the end of engine.py).
        extension(
            "chainrule._graph",
            "src/chainrule/_graph.c",
            ["src/chainrule/_slots.h", "src/chainrule/ops_kernels.h", "src/chainrule/ops_math.h"],
        ),
        # The C backend's program for long tapes: compiler/table.c and the kernels it includes.
        extension(
            "chainrule.compiler._tables",
            "src/chainrule/compiler/_tables.c",
            [
                "src/chainrule/compiler/table.c",
                "src/chainrule/compiler/kernels.c",
                "src/chainrule/ops_kernels.h",
                "src/chainrule/ops_math.h",
            ],
        ),
        # rewriting.layout() in C.
        extension(
            "chainrule.compiler._layout", "src/chainrule/compiler/_layout.c", ["src/chainrule/_slots.h"]
        ),
    ],
    cmdclass={"build_ext": build_ext_with_fallback},
)
