"""gradient_descent: the book's three runs, history, divergence, no mutation."""

from __future__ import annotations

import numpy as np
import pytest

import xgrad
from xgrad import DivergenceError, gradient_descent
from xgrad.testing import assert_close


def function_2(x):
    return x[0] ** 2 + x[1] ** 2


START = np.array([-3.0, 4.0])


def test_book_lr_0_1_converges(backend) -> None:
    x = gradient_descent(function_2, backend.asarray(START), lr=0.1, step_num=100)
    # Each step multiplies x by (1 - 2 lr) exactly up to rounding: book [-6.1e-10, 8.1e-10].
    assert_close(x, START * 0.8**100, rtol=1e-6)


def test_book_lr_10_blows_up(backend) -> None:
    x = gradient_descent(function_2, backend.asarray(START), lr=10.0, step_num=100)
    host = backend.to_numpy(x)
    assert np.all(np.isfinite(host))
    assert np.linalg.norm(host) > 1e10
    assert_close(x, START * (-19.0) ** 100, rtol=1e-6)


def test_book_lr_1e_10_barely_moves(backend) -> None:
    x = gradient_descent(function_2, backend.asarray(START), lr=1e-10, step_num=100)
    assert_close(x, START * (1 - 2e-10) ** 100, rtol=1e-12)
    assert np.all(np.abs(backend.to_numpy(x) - START) < 1e-7)


def test_divergence_reports_step(backend) -> None:
    # |x_k| = 4 * 19^k: f overflows to inf once 25 * 19^(2k) > 1.8e308, i.e. at x_120,
    # whose gradient is taken in step 121.
    with pytest.raises(DivergenceError, match="step 121") as info:
        gradient_descent(function_2, backend.asarray(START), lr=10.0, step_num=200)
    assert info.value.step == 121
    assert isinstance(info.value, ArithmeticError)
    assert np.all(np.isfinite(backend.to_numpy(info.value.x)))


def test_divergence_of_iterate(backend) -> None:
    xp = backend.xp

    def f(x):  # gradient exp(x) overflows the iterate at the first step from x = 700
        return xp.sum(xp.exp(x))

    with pytest.raises(DivergenceError, match="step 1 ") as info:
        gradient_descent(f, backend.asarray([700.0]), lr=1e10, step_num=5)
    assert info.value.step == 1


def test_history_is_the_books_x_history(backend) -> None:
    x, path = gradient_descent(
        function_2, backend.asarray(START), lr=0.1, step_num=20, history=True
    )
    assert tuple(path.shape) == (20, 2)
    expected = START[None, :] * 0.8 ** np.arange(20)[:, None]
    assert_close(path, expected, rtol=1e-9)
    assert_close(x, START * 0.8**20, rtol=1e-9)


def test_init_not_mutated_and_int_promoted(backend) -> None:
    init = backend.asarray(START)
    before = backend.to_numpy(init).tobytes()
    gradient_descent(function_2, init, lr=0.1, step_num=3)
    assert backend.to_numpy(init).tobytes() == before
    x = gradient_descent(function_2, backend.asarray(np.array([-3, 4])), lr=0.1, step_num=10)
    assert backend.dtype_name(x.dtype) == "float64"
    assert_close(x, START * 0.8**10, rtol=1e-9)


def test_float32(backend) -> None:
    x = gradient_descent(function_2, backend.asarray(START, dtype="float32"), lr=0.1, step_num=10)
    assert backend.dtype_name(x.dtype) == "float32"
    assert_close(x, (START * 0.8**10).astype(np.float32), rtol=1e-4)


def test_zero_steps_and_bad_arguments() -> None:
    x, path = gradient_descent(function_2, START, step_num=0, history=True)
    assert path.shape == (0, 2)
    np.testing.assert_array_equal(x, START)
    with pytest.raises(ValueError, match="step_num"):
        gradient_descent(function_2, START, step_num=-1)
    with pytest.raises(TypeError, match="lr"):
        gradient_descent(function_2, START, lr="fast")


def test_public_names() -> None:
    assert xgrad.gradient_descent is gradient_descent
    assert xgrad.DivergenceError is DivergenceError
