"""jacobian and hessian: analytic results on every backend, bounded memory options."""

from __future__ import annotations

import numpy as np
import pytest

import xgrad
from xgrad import hessian, jacobian
from xgrad.testing import assert_close

A_HOST = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])


def rosenbrock(v):
    return (1 - v[..., 0]) ** 2 + 100 * (v[..., 1] - v[..., 0] ** 2) ** 2


def rosenbrock_hessian(x, y):
    return np.array([[1200 * x**2 - 400 * y + 2, -400 * x], [-400 * x, 200.0]])


@pytest.mark.parametrize("method", ["central", "forward", "backward", "complex"])
def test_jacobian_of_linear_map_is_the_matrix(backend, method) -> None:
    """scipy.differentiate.jacobian returns A.T here; the Jacobian is A."""
    a = backend.asarray(A_HOST)
    xp = backend.xp
    # astype: torch's matmul refuses real @ complex, which complex step sends.
    jac = jacobian(
        lambda v: xp.astype(a, v.dtype) @ v, backend.asarray([0.5, -1.0, 2.0]), method=method
    )
    assert_close(jac, A_HOST, rtol=1e-7, atol=1e-9)


def test_jacobian_shapes_and_nonlinear(backend) -> None:
    xp = backend.xp
    host = np.array([[0.5, 1.0], [-0.3, 2.0]])

    def f(v):  # (2, 2) -> (3,)
        return xp.stack([xp.sum(v * v), v[0, 0] * v[1, 1], xp.sin(v[0, 1])])

    jac = jacobian(f, backend.asarray(host))
    expected = np.zeros((3, 2, 2))
    expected[0] = 2 * host
    expected[1, 0, 0], expected[1, 1, 1] = host[1, 1], host[0, 0]
    expected[2, 0, 1] = np.cos(host[0, 1])
    assert_close(jac, expected, rtol=1e-8, atol=1e-9)


def test_jacobian_batch_and_chunk_agree(backend) -> None:
    xp = backend.xp
    host = np.linspace(-1.0, 1.0, 7)

    def f(v):
        return xp.exp(v) * v[..., :1]

    expected = np.diag(np.exp(host) * host[0])
    expected[:, 0] += np.exp(host)
    x = backend.asarray(host)
    for kwargs in ({}, {"chunk_size": 1}, {"chunk_size": 3}, {"batch_size": 2}, {"batch_size": 7}):
        assert_close(jacobian(f, x, **kwargs), expected, rtol=1e-8, atol=1e-9)


def test_jacobian_float32(backend) -> None:
    a = backend.asarray(A_HOST, dtype="float32")
    jac = jacobian(lambda v: a @ v, backend.asarray([0.5, -1.0, 2.0], dtype="float32"))
    assert backend.dtype_name(jac.dtype) == "float32"
    assert_close(jac, A_HOST.astype(np.float32), rtol=1e-3)


def test_jacobian_errors(backend) -> None:
    xp = backend.xp
    x = backend.asarray([1.0, 2.0])
    with pytest.raises(ValueError, match="method"):
        jacobian(lambda v: v, x, method="secant")
    with pytest.raises(ValueError, match=r"x\[1\]"):
        jacobian(lambda v: v * xp.where(v[1] == 2.0, v[1] * 0.0 + 1.0, xp.nan), x)
    with pytest.raises(ValueError, match="chunk_size"):
        jacobian(lambda v: v, x, chunk_size=0)


def test_jacobian_does_not_touch_x(backend) -> None:
    x = backend.asarray([-0.0, 1.5])
    before = backend.to_numpy(x).tobytes()
    jacobian(lambda v: v * v, x)
    assert backend.to_numpy(x).tobytes() == before


@pytest.mark.parametrize("point", [(1.0, 1.0), (-1.2, 1.0), (0.3, -0.7)])
def test_hessian_rosenbrock(backend, point) -> None:
    hess = hessian(rosenbrock, backend.asarray(point))
    assert_close(hess, rosenbrock_hessian(*point), rtol=1e-6, atol=1e-5)
    host = backend.to_numpy(hess)
    assert np.array_equal(host, host.T)


def test_hessian_quadratic_form(backend) -> None:
    rng = np.random.default_rng(3)
    m = rng.standard_normal((5, 5))
    sym = m + m.T
    a = backend.asarray(sym)

    def f(v):
        return 0.5 * (v @ (a @ v))

    hess = hessian(f, backend.asarray(rng.standard_normal(5)))
    assert_close(hess, sym, rtol=1e-6, atol=1e-6)
    host = backend.to_numpy(hess)
    assert np.array_equal(host, host.T)


def test_hessian_batch_chunk_and_shape(backend) -> None:
    xp = backend.xp
    host = np.array([[0.5, -0.2], [0.1, 0.3]])

    def f(v):  # sum of exp over the last two axes: diagonal Hessian
        return xp.sum(xp.exp(v), axis=(-2, -1))

    expected = np.diag(np.exp(host).reshape(-1)).reshape(2, 2, 2, 2)
    x = backend.asarray(host)
    for kwargs in ({}, {"chunk_size": 1}, {"batch_size": 3}):
        assert_close(hessian(f, x, **kwargs), expected, rtol=1e-6, atol=1e-6)


def test_hessian_non_scalar(backend) -> None:
    with pytest.raises(ValueError, match="scalar"):
        hessian(lambda v: v * 2.0, backend.asarray([1.0, 2.0]))


def test_public_names() -> None:
    assert xgrad.jacobian is jacobian
    assert xgrad.hessian is hessian
