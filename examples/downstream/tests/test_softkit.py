"""Runs once per backend x device (and dtype) through xgrad's pytest plugin."""

import numpy as np
from softkit import logsumexp, softmax

import xgrad
from xgrad.testing import assert_close

POINT = [1000.0, 1001.0, -3.0]  # exp would overflow without the shift


def reference(dtype_name):
    x = np.array(POINT)
    m = x.max()
    return (m + np.log(np.exp(x - m).sum())).astype(dtype_name)


def test_logsumexp(backend, xp, dtype):
    x = xp.asarray(POINT, dtype=dtype, device=backend.device)
    assert_close(logsumexp(x), reference(backend.dtype_name(dtype)))


def test_softmax_is_the_gradient(backend, xp, dtype):
    x = xp.asarray([0.3, -1.2, 2.0], dtype=dtype, device=backend.device)
    assert bool(xgrad.gradcheck(logsumexp, x, grad=softmax))


def test_under_jit(backend, jit):
    x = backend.asarray(POINT)  # float64 everywhere (torch's xp.asarray would make float32)
    e = np.exp(np.array(POINT) - 1001.0)
    assert_close(jit(softmax)(x), e / e.sum())
