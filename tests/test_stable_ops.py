"""softplus and logsumexp: the stable ops the losses are built on, checked against sympy,
finite differences, the compiler and PyTorch."""

import math
import random

import pytest
import sympy as sp

import chainrule
from chainrule import Value, gradcheck, logsumexp


@pytest.mark.parametrize("x", [-30.0, -2.5, -1e-3, 0.0, 0.7, 4.0, 30.0])
def test_softplus_matches_sympy_value_and_first_two_derivatives(x):
    s = sp.Symbol("s")
    expr = sp.log(1 + sp.exp(s))
    x_exact = sp.Rational(x)  # exact, so sympy's 1 + e^-30 does not round away the answer
    f = lambda v: v.softplus()  # noqa: E731
    assert f(Value(x)).data == pytest.approx(float(expr.subs(s, x_exact)), rel=1e-12)
    assert chainrule.grad(f)(x) == pytest.approx(float(sp.diff(expr, s).subs(s, x_exact)), rel=1e-12)
    assert chainrule.grad(chainrule.grad(f))(x) == pytest.approx(
        float(sp.diff(expr, s, 2).subs(s, x_exact)), rel=1e-9, abs=1e-15
    )


@pytest.mark.parametrize("x", [1000.0, -1000.0, 1e6, -1e6])
def test_softplus_is_finite_for_huge_inputs(x):
    v = Value(x)
    y = v.softplus()
    y.backward()
    assert y.data == pytest.approx(max(x, 0.0))
    assert v.grad == pytest.approx(1.0 if x > 0 else 0.0)


def test_logsumexp_matches_sympy_gradient_and_hessian():
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(1, 5)
        xs = [rng.uniform(-5, 5) for _ in range(n)]
        symbols = sp.symbols(f"x0:{n}")
        expr = sp.log(sum(sp.exp(s) for s in symbols))
        point = dict(zip(symbols, xs))
        f = lambda *vs: logsumexp(vs)  # noqa: E731
        assert f(*map(Value, xs)).data == pytest.approx(float(expr.subs(point)), rel=1e-12)
        grads = chainrule.grad(f, argnums=tuple(range(n)))(*xs)
        for g, s in zip(grads, symbols):
            assert g == pytest.approx(float(sp.diff(expr, s).subs(point)), rel=1e-10)
        hessian = chainrule.hessian(f)(*xs)
        for i, si in enumerate(symbols):
            for j, sj in enumerate(symbols):
                expected = float(sp.diff(expr, si, sj).subs(point))
                assert hessian[i][j] == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_logsumexp_is_stable_and_its_gradient_is_the_softmax():
    zs = [Value(1000.0), Value(1000.0), Value(-1000.0)]
    out = logsumexp(zs)
    out.backward()
    assert out.data == pytest.approx(1000.0 + math.log(2.0))
    assert [z.grad for z in zs] == pytest.approx([0.5, 0.5, 0.0])


def test_gradcheck_passes_on_both_ops():
    assert gradcheck(lambda x: x.softplus(), [0.3])
    assert gradcheck(lambda a, b, c: logsumexp([a, b * 2, c]), [0.1, -0.4, 1.3])


def test_logsumexp_rejects_empty_and_non_numbers():
    with pytest.raises(ValueError, match="logsumexp"):
        logsumexp([])
    with pytest.raises(TypeError, match="str"):
        logsumexp([Value(1.0), "x"])


def test_both_ops_compile_to_the_same_numbers_as_eager():
    pytest.importorskip("numpy")
    w = Value(0.5)

    def f(xs):
        return logsumexp([(w * x).softplus() for x in xs]) + logsumexp(xs)

    fast = chainrule.compile(f)
    for xs in ([1.0, -2.0, 3.0], [1000.0, -1000.0, 0.0], [-50.0, 20.0, 0.1]):
        w.grad = 0.0
        eager = f([Value(x) for x in xs])
        eager.backward()
        eager_grad = w.grad
        w.grad = 0.0
        compiled = fast(xs)
        compiled.backward()
        assert compiled.data == pytest.approx(eager.data, rel=1e-12)
        assert w.grad == pytest.approx(eager_grad, rel=1e-12)
    assert len(fast.tapes) == 1


def test_against_pytorch_when_installed():
    torch = pytest.importorskip("torch")
    xs = [0.3, -1.7, 2.2, 5.0]
    t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    (torch.logsumexp(t, 0) + torch.nn.functional.softplus(t).sum()).backward()
    vs = [Value(x) for x in xs]
    out = logsumexp(vs) + chainrule.sum_values([v.softplus() for v in vs])
    out.backward()
    assert [v.grad for v in vs] == pytest.approx(t.grad.tolist(), rel=1e-12)
