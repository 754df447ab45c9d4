"""The central-difference gradient of ``TwoLayerNet``'s loss, summed in closed form.

A perturbation of ``W1[i, j]`` (or of ``b1[j]``, the weight of a constant input 1) by a step
``d`` moves hidden unit ``j`` of sample ``n`` by ``delta = d * x[n, i]`` before the
activation, and nothing else. The per-sample loss change is a function of that one number,

    g_nj(delta) = F_nj(S_nj(delta)),  S_nj(delta) = act(a1[n, j] + delta) - act(a1[n, j]),
    F_nj(u) = r_n * log(sum_c y[n, c] * exp(u * W2[j, c])) - u * (t @ W2.T)[n, j],

(``y`` the softmax, ``t`` the target rows, ``r_n = sum(t[n])``), the same function the
perturbation engine of :mod:`xgrad.nn` evaluates with one ``expm1`` per class. It is analytic
in ``delta`` (for ReLU away from the kink), so with its Taylor coefficients ``G_k[n, j]``

    loss change of W1[i, j] by d = (1/N) sum_k d**k * sum_n x[n, i]**k * G_k[n, j],

and the inner sum over samples is the matrix product ``(x**k).T @ G_k``. The central
difference ``(L(d+) - L(d-)) / (d+ - d-)`` of all 39,760 perturbations of the book's
784-50-10 net then costs ``K`` matrix products (``K`` = 3 to 5 orders at the default step)
and elementwise work on ``(N, H)`` arrays, instead of ``2 * (D + 1) * N * H * C`` ``expm1``
calls (7.9e7 at batch 100): the log-sum-exp of every perturbation is folded into the
cumulants of ``W2[j, :]`` under ``y[n, :]``, and a zero pixel contributes nothing, without a
gather. The difference quotient is formed without cancellation:
``(d+**k - d-**k) / (d+ - d-)`` is the polynomial ``sum_m d+**m * d-**(k-1-m)``.

Truncation. ``F`` is analytic for ``|Im u| * range_c W2[j, c] < pi`` (a positive combination
of exponentials whose phases span less than pi cannot vanish), the sigmoid for
``|Im z| < pi``, so ``g`` is analytic on a disk of radius ``R`` bounded below from
``range(W2)``; the order ``K`` is chosen so that ``(delta_max / R)**K`` lies far below the
dtype's rounding. When the steps and inputs are too large for that (``delta_max / R`` above
1/16, e.g. unscaled 0-255 pixels with a large ``h``), :func:`structured_gradient` returns
``None`` and the caller uses the exact perturbation engine.

ReLU kinks. Where ``|a1[n, j]|`` is within the largest step of the kink, a perturbation may
switch the unit on or off and ``g`` is not analytic there. Those (sample, unit) pairs, a
handful per batch at the default step, are left out of the sum: for every ``i`` their
unit change ``dz`` is computed exactly, as the perturbation engine does, and ``F(dz)`` from
F's series (F itself is analytic); their changes are summed per unit by a product with a
one-hot matrix (the array API has no scatter-add).

``W2[j, c]`` and ``b2[c]`` (``b2`` the weight of a constant hidden output 1) move one logit,
by ``delta = d * z1[n, j]``: the per-sample change ``r * log(1 + y_c * expm1(delta)) -
t_c * delta`` is the cumulant series of a Bernoulli(``y_c``) variable (analytic for
``|Im delta| < pi``), summed the same way with ``z1`` in place of ``x``; where ReLU outputs
are too large for it, these 510 differences are evaluated exactly.

Device shapes: the series need no chunks (their largest arrays are ``(N, H, C)`` and
``(D + 1, H)``); the ReLU kink pairs are evaluated in chunks of ``chunk_elements``, which
the caller sizes for the device (cache-sized on a CPU, one call on an accelerator).
"""

from __future__ import annotations

import math
from typing import Any

from xgrad import _compat, _policy
from xgrad.backends._registry import matmul
from xgrad.functions import _sigmoid, _softmax_cross_entropy

__all__ = ["series_order", "series_plan", "structured_gradient"]

# The series is used when delta_max / R is at most this; beyond it the exact engine.
_MAX_RATIO = 1.0 / 16.0
# Truncation target (relative to the scale of g on the disk): far below the dtype's rounding.
_TRUNCATION = {"float64": 1e-19, "float32": 1e-10}
# Bound of |sigmoid'(z)| for |Im z| <= 1: 1 / (4 cos(1/2)**2).
_SIGMOID_SLOPE = 1.0 / (4.0 * math.cos(0.5) ** 2)


def series_order(ratio: float, dtype_name: str) -> int | None:
    """Orders of the series for ``delta_max / R = ratio``; None where it would not converge fast.

    >>> series_order(1e-4, "float64"), series_order(1e-4, "float32"), series_order(0.5, "float64")
    (5, 3, None)
    """
    if not (math.isfinite(ratio) and ratio <= _MAX_RATIO):
        return None
    if ratio == 0.0:
        return 1
    return max(1, math.ceil(math.log(_TRUNCATION[dtype_name]) / math.log(ratio)))


def series_plan(
    x_max: float, range_max: float, step_max: float, activation: str, dtype_name: str
) -> int | None:
    """Series order for the largest input ``|x|`` (>= 1), ``range_c W2[j, c]`` and step.

    >>> series_plan(1.0, 0.05, 1e-4, "sigmoid", "float64")
    5
    >>> series_plan(255.0, 0.05, 1e-2, "relu", "float64") is None  # exact engine instead
    True
    """
    delta_max = step_max * x_max
    radius_f = math.pi / range_max if range_max > 0 else math.inf
    # g analytic with |F| = O(1) on |u| <= radius_f / 2; sigmoid maps |delta| <= 1 into
    # |u| <= _SIGMOID_SLOPE * |delta|.
    if activation == "sigmoid":
        radius = min(1.0, radius_f / (2.0 * _SIGMOID_SLOPE))
    else:
        radius = radius_f / 2.0
    return series_order(delta_max / radius if delta_max > 0 else math.nan, dtype_name)


def structured_gradient(
    backend: Any,
    x: Any,
    target: Any,
    params: dict[str, Any],
    activation: str,
    h: float,
    chunk_elements: int,
) -> dict[str, Any] | None:
    """Central-difference gradient of the mean loss for every parameter element, or None.

    ``x`` is ``(N, D)`` and ``target`` ``(N, C)`` in the parameters' dtype on their device.
    The result equals ``(loss(p+) - loss(p-)) / (p+ - p-)`` per element with
    ``p+- = p +- h`` rounded to the dtype, to the dtype's rounding. ``chunk_elements`` bounds
    the largest temporary of the exact ReLU-kink evaluation. None means the step or inputs
    are too large for the series (see the module docstring).
    """
    xp = backend.xp
    W1, b1, W2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    n, n_in = int(x.shape[0]), int(x.shape[1])
    dtype_name = "float64" if x.dtype == xp.float64 else "float32"
    dev = _compat.device(x)

    a1 = matmul(x, W1) + b1
    z1 = _sigmoid(xp, a1) if activation == "sigmoid" else xp.where(a1 <= 0, 0.0, a1)
    a2 = matmul(z1, W2) + b2
    _, y = _softmax_cross_entropy(xp, a2, target)
    row_sum = xp.sum(target, axis=1)  # 1 for labels and one-hot rows

    ones = xp.ones((n, 1), dtype=x.dtype, device=dev)
    x_aug = xp.concat([x, ones], axis=1)  # (N, D + 1): b1 is the weight of input 1
    w_aug = xp.concat([W1, xp.expand_dims(b1, axis=0)], axis=0)  # (D + 1, H)
    up, down = _policy.representable_steps(w_aug, h)
    z_aug = xp.concat([z1, ones], axis=1)  # (N, H + 1): b2 is the weight of input 1
    w2_aug = xp.concat([W2, xp.expand_dims(b2, axis=0)], axis=0)  # (H + 1, C)
    up2, down2 = _policy.representable_steps(w2_aug, h)

    # The one host transfer: sizes that fix the series orders (and the fallbacks).
    x_abs = xp.max(xp.abs(x_aug), axis=1)  # (N,), >= 1 through the bias column
    w_range = xp.max(W2, axis=1) - xp.min(W2, axis=1)  # (H,)
    summary = xp.stack(
        [
            xp.max(x_abs),
            xp.max(w_range),
            xp.max(xp.maximum(xp.abs(up), xp.abs(down))),
            xp.max(xp.abs(z_aug)),
            xp.max(xp.maximum(xp.abs(up2), xp.abs(down2))),
        ]
    )
    x_max, range_max, step_max, z_max, step2_max = (float(v) for v in backend.to_numpy(summary))
    order = series_plan(x_max, range_max, step_max, activation, dtype_name)
    if order is None:
        return None

    # Taylor coefficients of F (orders 1..K): r * cumulants / k! of W2[j, :] under y[n, :],
    # from moments about the mean (no cancellation of raw moments).
    r_col = xp.expand_dims(row_sum, axis=1)
    mean_w = matmul(y, W2.T)  # (N, H)
    f_coef = [matmul(r_col * y - target, W2.T)]  # F_1 = r * mean - t @ W2.T
    if order >= 2:
        centred = xp.expand_dims(W2, axis=0) - xp.expand_dims(mean_w, axis=2)  # (N, H, C)
        y_b = xp.expand_dims(y, axis=1)  # (N, 1, C)
        power = centred
        moments: list[Any] = [None]  # M_1 = 0 about the mean
        for k in range(2, order + 1):
            power = power * centred / k
            moments.append(xp.sum(power * y_b, axis=2))  # sum_c y_c v_c**k / k!
        f_coef += [r_col * c for c in _log_series(moments)[1:]]

    risky = None
    if activation == "sigmoid":
        g_coef = _compose_sigmoid(xp, a1, z1, f_coef, order)
    else:
        # Pairs within a step of the kink are evaluated exactly below.
        reach = (step_max * (1.0 + 1e-6)) * xp.expand_dims(x_abs, axis=1)
        risky = xp.abs(a1) <= reach
        keep = xp.astype(xp.logical_and(a1 > 0, xp.logical_not(risky)), x.dtype)
        g_coef = [f * keep for f in f_coef]

    grad_aug = _series_quotient(xp, x_aug, g_coef, up, down, x_max)
    if risky is not None:
        grad_aug = grad_aug + _kink_pairs(xp, risky, a1, x_aug, f_coef, up, down, chunk_elements)
    # A step that vanishes in rounding (|p| >> h) leaves the quotient undefined, as 0 / 0.
    grad_aug = xp.where(up != down, grad_aug, xp.nan)
    out = {"W1": grad_aug[:n_in, :], "b1": grad_aug[n_in, :]}

    # W2[j, c] (b2[c]: input 1) moves logit c by delta = d * z1[:, j]: the per-sample change
    # r * log(1 + y_c * expm1(delta)) - t_c * delta is the cumulant series of a Bernoulli(y_c)
    # variable, analytic for |Im delta| < pi.
    order2 = series_order(step2_max * z_max / (math.pi / 2.0), dtype_name)
    if order2 is None:
        out.update(_second_layer(xp, z1, y, target, row_sum, W2, b2, h))
    else:
        bernoulli = [y / math.factorial(k) for k in range(1, order2 + 1)]
        phi = [r_col * c for c in _log_series(bernoulli)]
        phi[0] = r_col * y - target
        grad2 = _series_quotient(xp, z_aug, phi, up2, down2, z_max)
        grad2 = xp.where(up2 != down2, grad2, xp.nan)
        n_hidden = int(W2.shape[0])
        out.update({"W2": grad2[:n_hidden, :], "b2": grad2[n_hidden, :]})
    return {k: out[k] for k in ("W1", "b1", "W2", "b2")}


def _log_series(moments: list[Any]) -> list[Any]:
    """Coefficients L_1..L_K of log(1 + sum_k M_k u**k) from M_1..M_K (None: zero)."""
    # M' = M L' gives k M_k = sum_{m=1}^{k} m L_m M_{k-m} with M_0 = 1.
    logs: list[Any] = []
    for k in range(1, len(moments) + 1):
        acc = moments[k - 1]
        for m in range(1, k):
            if logs[m - 1] is None or moments[k - m - 1] is None:
                continue
            term = (m / k) * logs[m - 1] * moments[k - m - 1]
            acc = -term if acc is None else acc - term
        logs.append(acc)
    return logs


def _series_quotient(
    xp: Any, inputs: Any, coefs: list[Any], up: Any, down: Any, scale: float
) -> Any:
    """``sum_k (d+**k - d-**k) / (d+ - d-) * mean_n inputs[n, i]**k * coefs[k-1][n, j]``.

    Powers are taken of ``inputs / scale`` and of ``e = d * scale`` (so that none over- or
    underflows); ``(e+**k - e-**k) / (e+ - e-)`` is the polynomial ``sum_m e+**m e-**(k-1-m)``,
    free of the cancellation in ``L(d+) - L(d-)``.
    """
    n = int(inputs.shape[0])
    hat = inputs / scale
    e_up, e_down = up * scale, down * scale
    power = hat
    h_poly = xp.ones_like(e_up)
    e_down_k = xp.ones_like(e_up)
    total = matmul(hat.T, coefs[0]) * h_poly
    for k in range(2, len(coefs) + 1):
        power = power * hat
        e_down_k = e_down_k * e_down
        h_poly = h_poly * e_up + e_down_k
        total = total + matmul(power.T, coefs[k - 1]) * h_poly
    return total * (scale / n)


def _compose_sigmoid(xp: Any, a1: Any, z1: Any, f_coef: list[Any], order: int) -> list[Any]:
    """Taylor coefficients (orders 1..K) of ``F(sigmoid(a1 + delta) - sigmoid(a1))``."""
    # s' = s * (1 - s) with 1 - s = sigmoid(-a) to full precision where s is near 1:
    # (k + 1) c_{k+1} = sum_m c_m cbar_{k-m}, cbar_0 = sigmoid(-a), cbar_m = -c_m (m >= 1).
    c = [z1]
    c_bar0 = _sigmoid(xp, -a1)
    for k in range(order):
        acc = c[0] * (c_bar0 if k == 0 else -c[k])
        for m in range(1, k + 1):
            acc = acc + c[m] * (c_bar0 if k - m == 0 else -c[k - m])
        c.append(acc / (k + 1))
    # G_k = sum_m F_m [S**m]_k, with [S**m]_k = 0 for k < m: ~K**3 / 6 products of (N, H)
    # arrays (a Toeplitz product of stacked series did more work in fewer, slower calls).
    g = [None, *(f_coef[0] * c[k] for k in range(1, order + 1))]
    power = [None, *c[1:]]  # power[k] = [S**m]_k for the current m
    for m in range(2, order + 1):
        nxt: list[Any] = [None] * (order + 1)
        for k in range(m, order + 1):
            acc = power[m - 1] * c[k - m + 1]
            for j in range(m, k):
                acc = acc + power[j] * c[k - j]
            nxt[k] = acc
        power = nxt
        for k in range(m, order + 1):
            g[k] = g[k] + f_coef[m - 1] * power[k]
    return g[1:]


def _relu_change(xp: Any, a: Any, delta: Any) -> Any:
    # The perturbation engine's expression (xgrad.nn._activation_change, relu branch).
    moved = a + delta
    return xp.where(a > 0, xp.where(moved > 0, delta, -a), xp.where(moved > 0, moved, 0.0))


def _kink_pairs(
    xp: Any,
    risky: Any,
    a1: Any,
    x_aug: Any,
    f_coef: list[Any],
    up: Any,
    down: Any,
    chunk_elements: int,
) -> Any:
    """Central differences of the (sample, unit) pairs near the ReLU kink, per (i, j).

    Only the map from ``delta`` to the unit's change ``dz`` has a kink: ``dz`` is computed
    exactly (as the perturbation engine does) and the loss change ``F(dz)`` from F's series,
    which holds for ``|dz| <= |delta|``. No exp per class: the pairs cost
    ``(2, D + 1, P)`` arrays.
    """
    n, n_hidden = int(a1.shape[0]), int(a1.shape[1])
    rows = int(x_aug.shape[1])
    dev = _compat.device(a1)
    result = xp.zeros((rows, n_hidden), dtype=a1.dtype, device=dev)
    flat = xp.nonzero(xp.reshape(risky, (-1,)))[0]
    n_pairs = int(flat.shape[0])
    if n_pairs == 0:
        return result
    sample, unit = flat // n_hidden, flat % n_hidden
    steps = xp.stack([up, down])  # (2, D + 1, H)
    columns = xp.arange(n_hidden, device=dev)
    per_chunk = max(1, chunk_elements // (2 * rows))
    a_flat = xp.reshape(a1, (-1,))
    f_flat = [xp.reshape(f, (-1,)) for f in f_coef]
    for p0 in range(0, n_pairs, per_chunk):
        p1 = min(p0 + per_chunk, n_pairs)  # the array API leaves out-of-range stops open
        f_p, s_p, u_p = flat[p0:p1], sample[p0:p1], unit[p0:p1]
        x_p = xp.take(x_aug, s_p, axis=0).T  # (D + 1, P)
        delta = xp.take(steps, u_p, axis=2) * xp.expand_dims(x_p, axis=0)  # (2, D + 1, P)
        dz = _relu_change(xp, xp.take(a_flat, f_p), delta)
        change = xp.take(f_flat[-1], f_p)  # Horner: F(dz) = dz (F_1 + dz (F_2 + ...))
        for f in reversed(f_flat[:-1]):
            change = change * dz + xp.take(f, f_p)
        change = change * dz
        one_hot = xp.astype(xp.expand_dims(u_p, axis=1) == columns, a1.dtype)  # (P, H)
        result = result + matmul(change[0, ...] - change[1, ...], one_hot)
    return result / (up - down) / n


def _second_layer(
    xp: Any, z1: Any, y: Any, target: Any, row_sum: Any, W2: Any, b2: Any, h: float
) -> dict[str, Any]:
    """Exact central differences for ``W2`` and ``b2``: each element moves one logit."""
    n = int(z1.shape[0])
    y_t, target_t = y.T, target.T  # (C, N)

    def logit_change(da: Any) -> Any:
        per_sample = row_sum * xp.log1p(y_t * xp.expm1(da)) - target_t * da
        return xp.sum(per_sample, axis=-1) / n

    out = {}
    up, down = _policy.representable_steps(b2, h)
    col_up, col_down = xp.expand_dims(up, axis=1), xp.expand_dims(down, axis=1)
    out["b2"] = (logit_change(col_up) - logit_change(col_down)) / (up - down)
    up, down = _policy.representable_steps(W2, h)
    z1_t = xp.expand_dims(z1.T, axis=1)  # (H, 1, N)
    moved_up = logit_change(xp.expand_dims(up, axis=2) * z1_t)
    moved_down = logit_change(xp.expand_dims(down, axis=2) * z1_t)
    out["W2"] = (moved_up - moved_down) / (up - down)
    return out
