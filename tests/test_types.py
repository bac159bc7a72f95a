"""chainrule's types: the package says it is typed (py.typed), its public API is annotated, and
mypy, configured in pyproject.toml ([tool.mypy]), finds no error in src/.
"""

import importlib
import importlib.resources
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The modules a user imports from; every public function, class and method in them is annotated
# (mypy's disallow_untyped_defs checks the same for these modules in pyproject.toml).
PUBLIC_MODULES = [
    "chainrule",
    "chainrule.autograd",
    "chainrule.chains",
    "chainrule.compiler",
    "chainrule.datasets",
    "chainrule.draw",
    "chainrule.engine",
    "chainrule.explorer",
    "chainrule.expression",
    "chainrule.functional",
    "chainrule.gpt",
    "chainrule.gradcheck",
    "chainrule.losses",
    "chainrule.nn",
    "chainrule.optim",
    "chainrule.parameters",
    "chainrule.serialize",
    "chainrule.training",
]


def test_the_package_is_marked_typed():
    """PEP 561: without py.typed next to the package, a type checker ignores its annotations."""
    marker = importlib.resources.files("chainrule") / "py.typed"
    assert marker.is_file()


def _public_functions(module):
    """(qualified name, function) for each public function of ``module``, and each public or
    special method of its public classes, that is defined in the module itself."""
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                public = not attr.startswith("_") or (attr.startswith("__") and attr.endswith("__"))
                # A NamedTuple's generated methods (__new__, __repr__) come from no file of ours.
                if public and inspect.isfunction(member) and member.__code__.co_filename == module.__file__:
                    yield f"{name}.{attr}", member


def _missing_annotations(function):
    """The names of ``function``'s unannotated parameters (self and cls aside), and "return"."""
    signature = inspect.signature(function)
    missing = [
        parameter.name
        for index, parameter in enumerate(signature.parameters.values())
        if parameter.annotation is inspect.Parameter.empty
        and not (index == 0 and parameter.name in ("self", "cls"))
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_the_public_api_is_annotated(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # an optional dependency (numpy, graphviz) missing
        pytest.skip(f"{module_name} does not import here: {error}")
    unannotated = {
        f"{module_name}.{name}": missing
        for name, function in _public_functions(module)
        if (missing := _missing_annotations(function))
    }
    assert unannotated == {}


def test_mypy_passes_on_src():
    """The README's test command runs the type checker too, on the source tree of this checkout."""
    pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[test]' installs it")
    if not (ROOT / "src" / "chainrule").is_dir():
        pytest.skip("no source tree next to the tests: mypy checks src/")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout


# A user's program, as a type checker sees chainrule from outside: micrograd's demo loop, a
# compiled function and a loss. It must check clean, and the wrong calls below must not.
USERS_PROGRAM = """
from chainrule import Value, compile, grad
from chainrule.losses import cross_entropy
from chainrule.nn import MLP
from chainrule.optim import Adam

model = MLP(2, [4, 1])
xs, ys = [[1.0, 2.0], [3.0, -1.0]], [1.0, -1.0]
ypred = [model(x) for x in xs]
# (with a start: typeshed's sum() of no items is the int 0, which has no backward)
loss = sum(((yout - ygt) ** 2 for ygt, yout in zip(ys, ypred)), Value(0.0))
loss.backward()
for p in model.parameters():
    p.data -= 0.01 * p.grad
optimizer = Adam(model.parameters(), lr=0.01)
optimizer.step()

a = Value(3.0)
b: Value = (a * a + 1).tanh()
slope: float = grad(lambda x: x * x)(2.0)
f = compile(lambda x: cross_entropy([a * x, a], 0))
out: Value = f(1.0)
"""

WRONG_CALLS = {
    "MLP(2, 16)": 'Argument 2 to "MLP" has incompatible type "int"',
    "Value(1.0).backward(create_graph='yes')": '"create_graph" to "backward" of "Value" has incompatible',
    "Adam([Value(1.0)], lr='fast')": 'Argument "lr" to "Adam" has incompatible type "str"',
}


def _mypy_on(tmp_path, source):
    """mypy on ``source`` as a user's file, outside this checkout: chainrule comes from where it is
    installed, and its py.typed is what lets mypy read its annotations."""
    pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[test]' installs it")
    (tmp_path / "program.py").write_text(source)
    options = ["--python-version", "3.10", "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *options, "program.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if 'named "chainrule"' in done.stdout:  # an install a type checker cannot follow (an import hook)
        pytest.skip("mypy cannot find the installed chainrule from outside the checkout")
    return done


@pytest.mark.slow  # mypy reads all of chainrule afresh for it
def test_a_users_program_type_checks(tmp_path):
    done = _mypy_on(tmp_path, USERS_PROGRAM)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_a_type_checker_catches_wrong_calls(tmp_path):
    imports = [
        "from chainrule import Value",
        "from chainrule.nn import MLP",
        "from chainrule.optim import Adam",
    ]
    done = _mypy_on(tmp_path, "\n".join(imports + list(WRONG_CALLS)) + "\n")
    assert done.returncode == 1
    errors = {int(e.split(":")[1]): e for e in done.stdout.splitlines() if e.startswith("program.py:")}
    for line, (call, message) in enumerate(WRONG_CALLS.items(), start=4):  # (after the 3 imports)
        assert message in errors.get(line, ""), (call, done.stdout)
