"""A whole solve, loop and all, compiled by XLA:CPU into one kernel when the problem is small.

XLA's CPU runtime runs a program as a sequence of thunks, one per fused kernel, and pays for each in
dispatch (and, once a buffer exceeds 512 bytes, in hand-offs between threads): microseconds per loop
trip, more than all the arithmetic of a small problem (L-BFGS on chained Rosenbrock at n = 100: 9.4 us
per iteration as separate kernels, 2.2 as one). XLA has a pass for exactly this case,
``SmallWhileLoopHoistingPass``: it moves a while loop that has no dot, convolution, custom call or
scatter into a call marked ``xla_cpu_small_call``, which the backend compiles into one function. But
its size limit (1 kB of accessed bytes) admits none of our loops and can only be raised for a whole
process, through ``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=N``,
which a library must not set for its users. No JAX library exposes it per computation, so we mark
the call ourselves (the whole solve, so that its set-up and result are in the kernel too), under that
pass's conditions and stricter ones of our own:

- the function (with everything it calls) uses only primitives from an allow-list that XLA's
  elemental emitter compiles (no sort, FFT, callback or random bits), or primitives given a loop of
  such forms in :mod:`jaxsecond._loop_forms` (matrix products, triangular solves, Cholesky, the
  batched one-index updates of ``vmap``); the kernel is then compiled from the function with those
  loops in their place;
- no reduction (inner products included) reads :data:`SINGLE_KERNEL_BELOW` elements or more (XLA
  hands those to its YNNPACK fusions, which the single-function emitter lacks), and no array has 16
  times that or more (one kernel runs on one thread);
- the default backend is the CPU.

The call is a primitive holding the function's jaxpr: under ``vmap`` its batching rule traces the
batched function and judges it again, on the batched sizes; its derivative is the plain function's,
and evaluated eagerly (``jax.disable_jit``) it is the plain function. Where the conditions do not
hold, the function's equations are inlined as they are. One kernel may order a reduction's sums
differently, so results agree with the multi-kernel program up to rounding.
"""

import functools
import math
import os
from typing import Any, Callable

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
from jax import lax
from jax.interpreters import ad, batching, mlir

from jaxsecond import _loop_forms as loop_forms

# Functions whose reductions all read fewer elements than this (and whose arrays have fewer than 16
# times as many) are compiled into one kernel on the CPU; 0 turns it off. Read when a solve is traced;
# set from the environment variable of the same name (prefixed JAXSECOND_) at import, and never above
# 4096: XLA:CPU gives reductions of 4096 elements or more to YNNPACK, which one kernel cannot hold.
_YNN_REDUCTIONS_FROM = 4096
SINGLE_KERNEL_BELOW = min(int(os.environ.get("JAXSECOND_SINGLE_KERNEL_BELOW", _YNN_REDUCTIONS_FROM)),
                          _YNN_REDUCTIONS_FROM)

# Primitives XLA's elemental IR emitter compiles inside one function: elementwise arithmetic,
# comparisons, conversions, shape manipulation, slicing, gathers, reductions, control flow. Two more
# are allowed in the forms XLA rewrites before that emitter sees them: vector products
# (``dot_general`` with an operand made only of batch and contracting dimensions) become reductions,
# and a scatter of one window (``x.at[i].set(v)``) becomes a dynamic update of a slice.
_ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "add_any", "and", "asin", "asinh", "atan", "atan2", "atanh",
    "bitcast_convert_type", "cbrt", "ceil", "clamp", "convert_element_type", "copy", "copy_p", "cos",
    "cosh", "digamma", "div", "eq", "erf", "erf_inv", "erfc", "exp", "exp2", "expm1", "floor", "ge",
    "gt", "imag", "integer_pow", "is_finite", "le", "lgamma", "log", "log1p", "logistic", "lt", "max",
    "min", "mul", "ne", "neg", "nextafter", "not", "or", "pow", "real", "reduce_precision", "rem",
    "round", "rsqrt", "select_n", "shift_left", "shift_right_arithmetic", "shift_right_logical", "sign",
    "sin", "sinh", "sqrt", "square", "stop_gradient", "sub", "tan", "tanh", "xor",
}
_STRUCTURAL = {
    "broadcast_in_dim", "concatenate", "dynamic_slice", "dynamic_update_slice", "expand_dims", "gather",
    "iota", "pad", "reshape", "rev", "slice", "split", "squeeze", "stack", "tile", "transpose", "unstack",
}
_REDUCTIONS = {
    "argmax", "argmin", "cumsum", "reduce_and", "reduce_max", "reduce_min", "reduce_or", "reduce_prod",
    "reduce_sum", "reduce_xor",
}
_CONTROL = {
    "cond", "while", "scan", "pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint", "optimization_barrier", "name",
}
_ALLOWED = _ELEMENTWISE | _STRUCTURAL | _REDUCTIONS | _CONTROL


def _vector_operands(eqn) -> tuple:
    """For a ``dot_general``: whether each operand is made only of batch and contracting dimensions."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = (v.aval for v in eqn.invars)
    return (len(lhs_contract) + len(lhs_batch) == lhs.ndim, len(rhs_contract) + len(rhs_batch) == rhs.ndim)


def _is_vector_product(eqn) -> bool:
    """Whether a ``dot_general`` multiplies by a vector (XLA rewrites it as a reduction)."""
    return any(_vector_operands(eqn))


def _is_single_window_scatter(eqn) -> bool:
    """Whether a scatter writes one window (its indices hold one index vector)."""
    indices = eqn.invars[1].aval
    return indices.size == len(eqn.params["dimension_numbers"].scatter_dims_to_operand_dims)


_REWRITTEN = {"dot_general": _is_vector_product, "scatter": _is_single_window_scatter,
              "scatter-add": _is_single_window_scatter}


def _reduces(eqn) -> bool:
    """Whether an equation is a whole reduction, as XLA sees it: a product is one when it makes one
    element per batch (an inner product, or a matrix with one row times a vector), whereas a
    matrix-vector product is a reduction of each row (any length: tested at 15 x 4369)."""
    if eqn.primitive.name == "dot_general":
        (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
        return eqn.outvars[0].aval.size == math.prod(eqn.invars[0].aval.shape[d] for d in lhs_batch)
    return eqn.primitive.name in _REDUCTIONS and eqn.primitive.name != "cumsum"  # a window reduction


def _every_equation(eqns, test) -> bool:
    """Whether ``test`` holds for every equation in ``eqns``, inside control flow and calls too."""
    return all(test(eqn) and all(_every_equation(sub.eqns, test) for sub in jex_core.jaxprs_in_params(eqn.params))
               for eqn in eqns)


def _allowed(eqn) -> bool:
    name = eqn.primitive.name
    return name in _ALLOWED or (name in _REWRITTEN and _REWRITTEN[name](eqn))


def _fits_one_kernel(jaxpr, limit: int) -> bool:
    """Whether every equation (recursively) is allowed, every reduction reads fewer than ``limit``
    elements and every array has fewer than ``16 * limit``."""
    def fits(eqn):
        sizes = [getattr(var.aval, "size", 0) for var in (*eqn.invars, *eqn.outvars)]
        too_large = max(sizes, default=0) >= 16 * limit or (_reduces(eqn) and max(sizes) >= limit)
        return _allowed(eqn) and not too_large

    return _every_equation(jaxpr.eqns, fits)


# Primitives outside the allow-list that have a loop form (jaxsecond._loop_forms) for small operands.
_LOOP_FORMS = {
    "dot_general": loop_forms.dot_general, "triangular_solve": loop_forms.triangular_solve,
    "cholesky": loop_forms.cholesky, "scatter": loop_forms.batched_scatter,
    "scatter-add": functools.partial(loop_forms.batched_scatter, add=True),
}
_INLINED = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
            "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "checkpoint": "jaxpr",
            "remat2": "jaxpr"}


def _platform_index_on_cpu(platforms, has_default=True, **_):
    """The branch that ``lax.platform_dependent`` takes on the CPU."""
    for i, names in enumerate(platforms):
        if names is not None and "cpu" in names:
            return i
    return len(platforms) - 1  # the default branch (listed as None, last)


def _with_loop_forms(jaxpr, consts, *args):
    """Evaluates ``jaxpr`` with each primitive outside the allow-list replaced by its loop form (inside
    control flow and calls too); raises ``loop_forms.Unsupported`` where there is none."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    read = lambda v: v.val if isinstance(v, jex_core.Literal) else env[v]
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name, params = eqn.primitive.name, eqn.params
        avals = [v.aval for v in eqn.outvars]
        if _every_equation([eqn], _allowed):  # bound as it is, as jax.core.eval_jaxpr binds it
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
        elif name in _LOOP_FORMS:
            extra = {"out_avals": avals} if eqn.primitive.multiple_results else {"out_aval": avals[0]}
            outs = _LOOP_FORMS[name](*invals, **params, **extra)
        elif name == "platform_index":
            outs = jnp.int32(_platform_index_on_cpu(**params))
        elif name in _INLINED:
            sub = params[_INLINED[name]]
            closed = sub if isinstance(sub, jex_core.ClosedJaxpr) else jex_core.ClosedJaxpr(sub, [])
            outs = _with_loop_forms(closed.jaxpr, closed.consts, *invals)
        elif name == "while":
            cond, body = params["cond_jaxpr"], params["body_jaxpr"]
            nc, nb = params["cond_nconsts"], params["body_nconsts"]
            cond_consts, body_consts, init = invals[:nc], invals[nc:nc + nb], invals[nc + nb:]
            test = lambda c: _with_loop_forms(cond.jaxpr, cond.consts, *cond_consts, *c)[0]
            step = lambda c: tuple(_with_loop_forms(body.jaxpr, body.consts, *body_consts, *c))
            if cond.out_avals[0].shape:  # batched by vmap: what jax's lowering of such a loop does
                def step(c, step=step):
                    going = test(c)
                    return tuple(jnp.where(going.reshape(going.shape + (1,) * (x.ndim - going.ndim)), new, x)
                                 for new, x in zip(step(c), c))
                outs = list(lax.while_loop(lambda c: jnp.any(test(c)), step, tuple(init)))
            else:
                outs = list(lax.while_loop(test, step, tuple(init)))
        elif name == "cond":
            branches = [functools.partial(lambda br, *ops: tuple(_with_loop_forms(br.jaxpr, br.consts, *ops)), br)
                        for br in params["branches"]]
            outs = list(lax.switch(invals[0], branches, *invals[1:]))
        else:
            raise loop_forms.Unsupported(name)
        outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _kernel(closed, limit):
    """The jaxpr to compile into one kernel: ``closed`` itself, or with loop forms in place of the
    primitives outside the allow-list; ``None`` where neither fits."""
    if _every_equation(closed.jaxpr.eqns, _allowed):
        return closed if _fits_one_kernel(closed.jaxpr, limit) else None
    if not _every_equation(closed.jaxpr.eqns, lambda e: _allowed(e) or e.primitive.name in _LOOP_FORMS
                           or e.primitive.name == "platform_index"):
        return None
    avals = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    try:
        kernel = jax.make_jaxpr(lambda *a: _with_loop_forms(closed.jaxpr, closed.consts, *a))(*avals)
    except loop_forms.Unsupported:
        return None
    return kernel if _fits_one_kernel(kernel.jaxpr, limit) else None


# The call as a primitive that holds the function's closed jaxpr and the kernel's (the same, or with
# loop forms). Its CPU lowering emits the kernel as a call to a function named ``_CALLEE`` and marks
# that call; elsewhere it inlines the function.
_one_kernel_p = jex_core.Primitive("jaxsecond_one_kernel")
_one_kernel_p.multiple_results = True
_CALLEE = "jaxsecond_one_kernel"


def _evaluate(closed, *operands):
    return jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *operands)


def _hoist_traced_consts(closed):
    """``closed`` with its traced constants (values of an enclosing trace, which cannot be parameters
    of a primitive) made leading inputs; those and the closed jaxpr. Concrete constants stay in it (as
    constants of the kernel, which XLA can fold)."""
    traced = [isinstance(c, jax.core.Tracer) for c in closed.consts]
    if not any(traced):
        return [], closed
    jaxpr = closed.jaxpr
    hoisted = [v for v, t in zip(jaxpr.constvars, traced) if t]
    kept = [(v, c) for v, c, t in zip(jaxpr.constvars, closed.consts, traced) if not t]
    jaxpr = jaxpr.replace(constvars=[v for v, _ in kept], invars=[*hoisted, *jaxpr.invars])
    return [c for c, t in zip(closed.consts, traced) if t], jex_core.ClosedJaxpr(jaxpr, [c for _, c in kept])


def _batched(operands, dims, *, jaxpr, kernel):
    out = call(jax.vmap(functools.partial(_evaluate, jaxpr), in_axes=tuple(dims)), *operands)
    return out, [0] * len(out)


def _jvp(primals, tangents, *, jaxpr, kernel):
    tangents = tuple(ad.instantiate_zeros(t) for t in tangents)
    return jax.jvp(functools.partial(_evaluate, jaxpr), tuple(primals), tangents)


def _mark(value):
    """Marks the call to ``_CALLEE`` that produced ``value``; whether there was one."""
    owner = value.owner
    op = None if owner is None or isinstance(owner, mlir.ir.Block) else owner.operation
    if op is None or op.name != "func.call" or _CALLEE not in str(op.attributes["callee"]):
        return False
    attributes = {}
    if "mhlo.frontend_attributes" in op.attributes:
        existing = mlir.ir.DictAttr(op.attributes["mhlo.frontend_attributes"])
        attributes = {existing[i].name: existing[i].attr for i in range(len(existing))}
    attributes["xla_cpu_small_call"] = mlir.ir.StringAttr.get("true")
    # Keeps XLA's call inliner from dissolving the call before the CPU backend sees it.
    attributes["inlineable"] = mlir.ir.StringAttr.get("false")
    op.attributes["mhlo.frontend_attributes"] = mlir.ir.DictAttr.get(attributes)
    return True


def _cpu_lowering(ctx, *operands, jaxpr, kernel):
    def jaxsecond_one_kernel(*operands):  # the callee's name identifies the call to mark
        # The first element of every operand is returned too (and dropped below): XLA:CPU fails a
        # check when emitting a marked call with a parameter nothing reads, and XLA's own
        # simplifications (dead code, x * 0) can leave one.
        return (*_evaluate(kernel, *operands), *[x.reshape(-1)[:1] for x in operands])

    out = mlir.lower_fun(jax.jit(jaxsecond_one_kernel), multiple_results=True)(ctx, *operands)
    values = [v for group in out for v in (group if isinstance(group, (list, tuple)) else [group])]
    if values:
        _mark(values[0])
    return out[:len(kernel.out_avals)]


_one_kernel_p.def_abstract_eval(lambda *avals, jaxpr, kernel: jaxpr.out_avals)
_one_kernel_p.def_impl(lambda *operands, jaxpr, kernel: _evaluate(jaxpr, *operands))  # eagerly: unmarked
batching.primitive_batchers[_one_kernel_p] = _batched
ad.primitive_jvps[_one_kernel_p] = _jvp
mlir.register_lowering(
    _one_kernel_p, mlir.lower_fun(lambda *o, jaxpr, kernel: _evaluate(jaxpr, *o), multiple_results=True),
    cacheable=False)
mlir.register_lowering(_one_kernel_p, _cpu_lowering, platform="cpu", cacheable=False)


def call(fun: Callable, *args: Any) -> Any:
    """``fun(*args)``, compiled into one kernel on the CPU when it is small enough (see the module).

    ``fun`` is traced once; where the conditions do not hold its equations are inlined as they are.
    Under ``vmap`` the batched function is traced and judged again.

    Args:
      fun: a function of arrays (pytrees) to arrays (a pytree).
      *args: its arguments.

    Returns:
      ``fun(*args)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax import lax
      >>> int(call(lambda i: lax.while_loop(lambda i: i < 10, lambda i: i + 1, i), jnp.int32(0)))
      10
    """
    closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(*args)
    hoisted, closed = _hoist_traced_consts(closed)
    operands = [*hoisted, *jax.tree.leaves(args)]
    small = (SINGLE_KERNEL_BELOW > 0 and jax.default_backend() == "cpu"
             and all(jnp.size(x) > 0 for x in operands))  # an empty operand has no element to keep read
    kernel = _kernel(closed, SINGLE_KERNEL_BELOW) if small else None
    if kernel is not None:
        # Through a barrier: XLA:CPU fails a check when emitting a marked call that reads a constant's
        # buffer (a large array an enclosing jit closed over); behind the barrier it is a value.
        out = _one_kernel_p.bind(*lax.optimization_barrier(operands), jaxpr=closed, kernel=kernel)
    else:
        out = _evaluate(closed, *operands)
    return jax.tree.unflatten(jax.tree.structure(out_shape), out)
