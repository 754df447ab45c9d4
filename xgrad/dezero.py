"""DeZero's core (steps 1-24 of "Deep Learning from Scratch 3"), on every backend.

`Variable` wraps an array of any registered backend; `Function` turns arrays into arrays
in ``forward`` and gradients into gradients in ``backward``; calling a Function on
Variables records the graph, and `Variable.backward` walks it back in generation order
(DeZero step 16), so variables used twice (``add(x, x)``) accumulate their gradients.

>>> x = Variable(0.5)
>>> y = square(exp(square(x)))
>>> y.backward()
>>> float(x.grad)  # 4 x e^{2x^2}
3.297442541400256
>>> a = Variable(3.0)
>>> y = add(a, a)
>>> y.backward()
>>> a.grad
array(2.)
"""

from __future__ import annotations

import contextlib
import heapq
import math
import numbers
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from xgrad import _compat
from xgrad._arrays import to_numpy
from xgrad.backends import Backend, resolve_backend
from xgrad.backends._base import DtypeLike
from xgrad.backends._registry import backend_of

__all__ = [
    "Add",
    "Config",
    "Cos",
    "Div",
    "Exp",
    "Function",
    "Log",
    "Mul",
    "Neg",
    "Pow",
    "Sin",
    "Square",
    "Sub",
    "Tanh",
    "Variable",
    "add",
    "as_array",
    "as_variable",
    "cos",
    "div",
    "exp",
    "log",
    "mul",
    "neg",
    "no_grad",
    "pow",
    "sin",
    "square",
    "sub",
    "tanh",
    "using_config",
]


class Config:
    """Global switches (DeZero step 18): ``enable_backprop`` records the graph."""

    enable_backprop = True


@contextlib.contextmanager
def using_config(name: str, value: Any) -> Iterator[None]:
    """Set ``Config.<name>`` to ``value`` inside a ``with`` block."""
    if not hasattr(Config, name):
        raise ValueError(f"name: expected an attribute of Config, found {name!r}")
    old = getattr(Config, name)
    setattr(Config, name, value)
    try:
        yield
    finally:
        setattr(Config, name, old)


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Evaluate without recording the graph (no creators, no memory held for backward).

    >>> with no_grad():
    ...     y = square(Variable(2.0))
    >>> y.creator is None
    True
    """
    return using_config("enable_backprop", False)


# -- conversion -------------------------------------------------------------------------


def _is_scalar(obj: Any) -> bool:
    # NumPy scalars count as scalars, not as NumPy arrays, so that `x * np.float64(2)`
    # works for a torch or JAX Variable x just like `x * 2.0`.
    return isinstance(obj, numbers.Number | np.generic) and not isinstance(obj, bool | np.bool_)


def _check_numeric(kind: str, obj: Any, name: str) -> None:
    if not (kind.startswith(("float", "complex", "int", "uint")) or kind == "bool"):
        raise TypeError(
            f"{name}: expected a number or a numeric array, found {type(obj).__name__}"
            f" of dtype {kind}"
        )


def as_array(
    obj: Any, backend: str | Backend | None = None, *, dtype: DtypeLike = None, name: str = "data"
) -> Any:
    """``obj`` as a floating (or complex) array of its backend, or of ``backend``.

    Python and NumPy scalars, lists of numbers and NumPy arrays become arrays of
    ``backend`` (default: the current default backend); arrays of a backend stay there
    unless ``backend`` names another. Integer and boolean input is promoted to float64
    (the book's integer arrays give silently wrong gradients); floating input keeps its
    precision unless ``dtype`` is given.

    Raises
    ------
    TypeError
        For strings, objects and anything else that is not numeric, naming ``name``.

    >>> as_array(2.0)
    array(2.)
    """
    if isinstance(obj, str | bytes) or obj is None:
        raise TypeError(f"{name}: expected a number or a numeric array, found {obj!r}")
    b = resolve_backend(backend, obj) if not _is_scalar(obj) else resolve_backend(backend)
    if b.owns(obj) and not isinstance(obj, np.generic):
        kind = b.dtype_name(obj.dtype)
        _check_numeric(kind, obj, name)
    else:
        try:
            host = np.asarray(obj) if backend_of(obj, strict=False) is None else to_numpy(obj)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name}: expected a number or a numeric array, found {type(obj).__name__} ({exc})"
            ) from None
        kind = host.dtype.name
        _check_numeric(kind, obj, name)
        obj = host
    if dtype is not None:
        target = b.float_dtype(dtype)
    elif kind.startswith(("float", "complex")):
        return b.asarray(obj)
    else:
        target = b.float_dtype(None)
    return b.asarray(obj, dtype=target)


def as_variable(obj: Any, backend: str | Backend | None = None) -> Variable:
    """``obj`` itself if it is a Variable, else ``Variable(obj, backend=backend)``."""
    if isinstance(obj, Variable):
        return obj
    return Variable(obj, backend=backend)


# -- Variable ---------------------------------------------------------------------------


class Variable:
    """A box around an array that remembers the Function that made it.

    Parameters
    ----------
    data : array, Python or NumPy scalar, list of numbers, or None
        The value. Arrays of any registered backend are kept on their backend and device;
        everything else becomes an array of ``backend`` (default: the default backend).
        Integers and booleans become float64; ``Variable(2.0)`` is a float64 0-d array.
    name : str, optional
        A label (DeZero step 19).
    backend : str or Backend, optional
        Where ``data`` goes (an array of another backend is moved there).
    dtype : {"float32", "float64"}, optional
        Cast ``data`` to this floating dtype.

    Attributes
    ----------
    data : array or None
    grad : array or None
        d(output)/d(self) after ``backward()``: an array of ``data``'s backend, device,
        shape and dtype.
    creator : Function or None
        The Function whose output this is (None for a leaf).
    generation : int
        Depth in the graph, for the backward order.

    Examples
    --------
    >>> x = Variable([1.0, 2.0, 3.0])
    >>> x
    variable([1. 2. 3.])
    >>> y = 2 * x ** 3 - x / 4 + 1
    >>> y.backward()
    >>> x.grad
    array([ 5.75, 23.75, 53.75])
    """

    # NumPy must leave `ndarray * Variable` to Variable.__rmul__ (DeZero step 21).
    __array_priority__ = 200

    def __init__(
        self,
        data: Any,
        name: str | None = None,
        *,
        backend: str | Backend | None = None,
        dtype: DtypeLike = None,
    ) -> None:
        if data is not None:
            data = as_array(data, backend, dtype=dtype)
        elif backend is not None or dtype is not None:
            raise ValueError("data: None (an empty Variable) takes no backend or dtype")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name: expected a string or None, found {name!r}")
        self.data = data
        self.name = name
        self.grad: Any = None
        self.creator: Function | None = None
        self.generation = 0

    @classmethod
    def _wrap(cls, data: Any) -> Variable:
        # For arrays that are already right (Function outputs): skips the conversion.
        v = cls.__new__(cls)
        v.data = data
        v.name = None
        v.grad = None
        v.creator = None
        v.generation = 0
        return v

    # -- array-like attributes ---------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return int(self.data.ndim)

    @property
    def size(self) -> int:
        return int(_compat.size(self.data))

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def backend(self) -> Backend:
        """The backend (library and device) ``data`` lives on."""
        return resolve_backend(None, self.data)

    def __xgrad_unwrap__(self) -> tuple[Any, Callable[[Any], Variable]]:
        """The array inside and how to wrap one like it: what `xgrad.numerical_diff` needs to
        differentiate a function of Variables (its f sees Variables, its engine arrays)."""
        return self.data, Variable

    def __len__(self) -> int:
        if self.data is None or self.ndim == 0:
            raise TypeError("len() of a 0-d or empty Variable")
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        if self.data is None:
            return "variable(None)"
        text = str(to_numpy(self.data)).replace("\n", "\n" + " " * 9)
        b = self.backend
        suffix = "" if b.name == "numpy" else f", backend={b.spec!r}"
        return f"variable({text}{suffix})"

    # -- graph -------------------------------------------------------------------------
    def set_creator(self, func: Function) -> None:
        self.creator = func
        self.generation = func.generation + 1

    def cleargrad(self) -> None:
        """Forget ``grad`` (before reusing the Variable in a new computation)."""
        self.grad = None

    def backward(self, retain_grad: bool = True) -> None:
        """Backpropagate from this Variable to every Variable it was computed from.

        The seed gradient is ``ones_like(data)`` (on data's device) unless ``grad`` was
        set beforehand. Functions run in decreasing generation, each once, so a Variable
        used several times gets the sum of its gradients (DeZero step 16). Gradients
        accumulate over calls: use `cleargrad` between independent computations.

        Parameters
        ----------
        retain_grad : bool, default True
            Keep the gradients of intermediate Variables (DeZero steps 6-17); False frees
            them as soon as they are used (DeZero step 18), keeping only the leaves'.
        """
        if self.data is None:
            raise ValueError("backward: this Variable holds no data")
        if self.grad is None:
            xp = _compat.array_namespace(self.data)
            self.grad = xp.ones_like(self.data, device=_compat.device(self.data))

        # A heap ordered by -generation pops the latest function first; the counter
        # keeps pushes of equal generation in order and never compares Functions.
        heap: list[tuple[int, int, Function]] = []
        seen: set[int] = set()
        counter = 0

        def push(f: Function) -> None:
            nonlocal counter
            if id(f) not in seen:
                seen.add(id(f))
                heapq.heappush(heap, (-f.generation, counter, f))
                counter += 1

        if self.creator is not None:
            push(self.creator)
        while heap:
            f = heapq.heappop(heap)[2]
            outputs = [ref() for ref in f.outputs]
            gys = [o.grad if o is not None else None for o in outputs]
            gxs = f._backward_arrays(gys)
            for x, gx in zip(f.inputs, gxs, strict=True):
                # Not `+=`: the first gradient may be the very array of another Variable.
                x.grad = gx if x.grad is None else Function._as_output(x.grad + gx, gx)
                if x.creator is not None:
                    push(x.creator)
            if not retain_grad:
                for o in outputs:
                    if o is not None:
                        o.grad = None

    # -- operators (DeZero steps 20-22) ------------------------------------------------
    def __neg__(self) -> Variable:
        return neg(self)

    def __add__(self, other: Any) -> Variable:
        return add(self, other)

    def __radd__(self, other: Any) -> Variable:
        return add(other, self)

    def __sub__(self, other: Any) -> Variable:
        return sub(self, other)

    def __rsub__(self, other: Any) -> Variable:
        return sub(other, self)

    def __mul__(self, other: Any) -> Variable:
        return mul(self, other)

    def __rmul__(self, other: Any) -> Variable:
        return mul(other, self)

    def __truediv__(self, other: Any) -> Variable:
        return div(self, other)

    def __rtruediv__(self, other: Any) -> Variable:
        return div(other, self)

    def __pow__(self, c: Any) -> Variable:
        return pow(self, c)

    def __rpow__(self, base: Any) -> Variable:
        return _RPow(base)(self)


# -- Function ---------------------------------------------------------------------------


def _sum_to(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast."""
    if tuple(g.shape) == shape:
        return g
    xp = _compat.array_namespace(g)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1
    )
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, shape) if lead else g


class Function:
    """Base class of differentiable functions (DeZero steps 2-24).

    Subclasses implement ``forward(*xs)`` on raw arrays (returning an array or a tuple
    of arrays) and ``backward(*gys)`` returning the gradients of the inputs as arrays
    (one array, or a tuple with one entry per input).

    Calling a Function converts its inputs to Variables (Python scalars take the backend,
    device and floating dtype of the array inputs), runs ``forward``, wraps the results
    in Variables whose ``creator`` is the Function, and returns one Variable when there
    is one output. Inputs of two backends or devices raise ``ValueError``.

    The outputs are held through weak references (DeZero step 17): a strong reference
    would close the cycle output -> creator -> output, and the arrays (GPU memory
    included) would then wait for the cyclic garbage collector instead of being freed
    as soon as the user drops the output.
    """

    inputs: list[Variable]
    outputs: list[weakref.ref[Variable]]
    generation: int

    def __call__(self, *inputs: Any) -> Any:
        xs_vars = self._as_variables(inputs)
        xs = [v.data for v in xs_vars]
        ys = self.forward(*xs)
        if not isinstance(ys, tuple):
            ys = (ys,)
        ref = xs[0]
        outputs = [Variable._wrap(self._as_output(y, ref)) for y in ys]
        if Config.enable_backprop:
            self.generation = max(v.generation for v in xs_vars)
            for out in outputs:
                out.set_creator(self)
            self.inputs = xs_vars
            self.outputs = [weakref.ref(out) for out in outputs]
        return outputs if len(outputs) > 1 else outputs[0]

    @staticmethod
    def _as_variables(inputs: tuple[Any, ...]) -> list[Variable]:
        if not inputs:
            raise TypeError("a Function takes at least one input")
        for i, x in enumerate(inputs):
            if isinstance(x, Variable) and x.data is None:
                raise ValueError(f"input {i}: the Variable holds no data")
        if len(inputs) == 1 and isinstance(inputs[0], Variable):
            return [inputs[0]]
        arrays = [x.data if isinstance(x, Variable) else x for x in inputs]
        backend = resolve_backend(None, *[a for a in arrays if not _is_scalar(a)])
        out: list[Variable | None] = [
            x if isinstance(x, Variable) else None if _is_scalar(x) else as_variable(x, backend)
            for x in inputs
        ]
        ref = next((v.data for v in out if v is not None), None)
        for i, x in enumerate(inputs):
            if out[i] is None:
                if ref is not None and not np.iscomplexobj(x):
                    # Scalars are weak, as in the array API: `x32 * 2.0` stays float32.
                    out[i] = Variable._wrap(backend.asarray(np.asarray(x), dtype=ref.dtype))
                else:
                    out[i] = Variable(x, backend=backend)
        return out  # type: ignore[return-value]

    @staticmethod
    def _as_output(y: Any, ref: Any) -> Any:
        # NumPy turns 0-d results into NumPy scalars; keep them arrays (DeZero step 9).
        if isinstance(y, np.generic):
            return _compat.array_namespace(ref).asarray(y)
        return y

    def _backward_arrays(self, gys: list[Any]) -> tuple[Any, ...]:
        gxs = self.backward(*gys)
        if not isinstance(gxs, tuple):
            gxs = (gxs,)
        if len(gxs) != len(self.inputs):
            raise ValueError(
                f"{type(self).__name__}.backward: expected {len(self.inputs)} gradients,"
                f" found {len(gxs)}"
            )
        out = []
        for x, gx in zip(self.inputs, gxs, strict=True):
            gx = self._as_output(gx, x.data)
            gx = _sum_to(gx, tuple(x.data.shape))
            if gx.dtype != x.data.dtype:
                gx = _compat.array_namespace(gx).astype(gx, x.data.dtype)
            out.append(gx)
        return tuple(out)

    def forward(self, *xs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *gys: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.backward")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _xp(x: Any) -> Any:
    return _compat.array_namespace(x)


class Square(Function):
    """y = x ** 2 (DeZero step 2)."""

    def forward(self, x: Any) -> Any:
        return x**2

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        return 2 * x * gy


class Exp(Function):
    """y = e ** x (DeZero step 3)."""

    def forward(self, x: Any) -> Any:
        return _xp(x).exp(x)

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        return _xp(x).exp(x) * gy


class Add(Function):
    """y = x0 + x1, with broadcasting."""

    def forward(self, x0: Any, x1: Any) -> Any:
        return x0 + x1

    def backward(self, gy: Any) -> tuple[Any, Any]:
        return gy, gy


class Mul(Function):
    """y = x0 * x1, with broadcasting."""

    def forward(self, x0: Any, x1: Any) -> Any:
        return x0 * x1

    def backward(self, gy: Any) -> tuple[Any, Any]:
        x0, x1 = self.inputs[0].data, self.inputs[1].data
        return gy * x1, gy * x0


class Neg(Function):
    """y = -x."""

    def forward(self, x: Any) -> Any:
        return -x

    def backward(self, gy: Any) -> Any:
        return -gy


class Sub(Function):
    """y = x0 - x1, with broadcasting."""

    def forward(self, x0: Any, x1: Any) -> Any:
        return x0 - x1

    def backward(self, gy: Any) -> tuple[Any, Any]:
        return gy, -gy


class Div(Function):
    """y = x0 / x1, with broadcasting."""

    def forward(self, x0: Any, x1: Any) -> Any:
        return x0 / x1

    def backward(self, gy: Any) -> tuple[Any, Any]:
        x0, x1 = self.inputs[0].data, self.inputs[1].data
        return gy / x1, gy * (-x0 / x1**2)


class Pow(Function):
    """y = x ** c for a constant real exponent ``c`` (DeZero step 22).

    >>> x = Variable(2.0)
    >>> y = Pow(3)(x)
    >>> y.backward()
    >>> y.data, x.grad
    (array(8.), array(12.))
    """

    def __init__(self, c: float) -> None:
        if not isinstance(c, numbers.Real) or isinstance(c, bool):
            raise TypeError(
                f"c: expected a real Python number as exponent, found {type(c).__name__}"
                " (for a Variable exponent use exp(c * log(x)))"
            )
        self.c: Any = c

    def forward(self, x: Any) -> Any:
        return x**self.c

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        c = self.c
        return c * x ** (c - 1) * gy

    def __repr__(self) -> str:
        return f"Pow({self.c!r})"


class _RPow(Function):
    """y = base ** x for a constant real base (``2.0 ** x``)."""

    def __init__(self, base: Any) -> None:
        if not isinstance(base, numbers.Real) or isinstance(base, bool):
            raise TypeError(f"base: expected a real Python number, found {type(base).__name__}")
        if not float(base) > 0:
            raise ValueError(f"base: expected a positive number, found {base}")
        self.base = float(base)

    def forward(self, x: Any) -> Any:
        return self.base**x

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        return self.base**x * math.log(self.base) * gy


class Sin(Function):
    """y = sin(x)."""

    def forward(self, x: Any) -> Any:
        return _xp(x).sin(x)

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        return gy * _xp(x).cos(x)


class Cos(Function):
    """y = cos(x)."""

    def forward(self, x: Any) -> Any:
        return _xp(x).cos(x)

    def backward(self, gy: Any) -> Any:
        x = self.inputs[0].data
        return gy * -_xp(x).sin(x)


class Tanh(Function):
    """y = tanh(x); dy/dx = 1 - y ** 2."""

    def forward(self, x: Any) -> Any:
        return _xp(x).tanh(x)

    def backward(self, gy: Any) -> Any:
        y = self.outputs[0]()
        yd = y.data if y is not None else _xp(gy).tanh(self.inputs[0].data)
        return gy * (1 - yd * yd)


class Log(Function):
    """y = log(x) (natural logarithm)."""

    def forward(self, x: Any) -> Any:
        return _xp(x).log(x)

    def backward(self, gy: Any) -> Any:
        return gy / self.inputs[0].data


# -- lowercase conveniences (DeZero step 9) ---------------------------------------------


def square(x: Any) -> Variable:
    """x ** 2 as a Variable."""
    return Square()(x)


def exp(x: Any) -> Variable:
    """e ** x as a Variable."""
    return Exp()(x)


def add(x0: Any, x1: Any) -> Variable:
    """x0 + x1 as a Variable (either may be a Python scalar)."""
    return Add()(x0, x1)


def mul(x0: Any, x1: Any) -> Variable:
    """x0 * x1 as a Variable (either may be a Python scalar)."""
    return Mul()(x0, x1)


def neg(x: Any) -> Variable:
    """-x as a Variable."""
    return Neg()(x)


def sub(x0: Any, x1: Any) -> Variable:
    """x0 - x1 as a Variable (either may be a Python scalar)."""
    return Sub()(x0, x1)


def div(x0: Any, x1: Any) -> Variable:
    """x0 / x1 as a Variable (either may be a Python scalar)."""
    return Div()(x0, x1)


def pow(x: Any, c: float) -> Variable:
    """x ** c for a real Python number ``c``, as a Variable."""
    return Pow(c)(x)


def sin(x: Any) -> Variable:
    """sin(x) as a Variable."""
    return Sin()(x)


def cos(x: Any) -> Variable:
    """cos(x) as a Variable."""
    return Cos()(x)


def tanh(x: Any) -> Variable:
    """tanh(x) as a Variable."""
    return Tanh()(x)


def log(x: Any) -> Variable:
    """Natural logarithm of x as a Variable."""
    return Log()(x)
