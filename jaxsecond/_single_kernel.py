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
  elemental emitter compiles (no linear algebra, sort, scatter of several indices, FFT, callback,
  random bits);
- no reduction (inner products included) reads :data:`SINGLE_KERNEL_BELOW` elements or more (XLA
  hands those to its YNNPACK fusions, which the single-function emitter lacks), and no array has 16
  times that or more (one kernel runs on one thread);
- the default backend is the CPU, and the call is not batched by ``vmap`` (the mark is dropped by its
  batching rule: under ``vmap`` the sizes checked here would be multiplied by the batch).

Otherwise the function's equations are inlined as they are. One kernel may order a reduction's sums
differently, so results agree with the multi-kernel program up to rounding.
"""

import os
from typing import Any, Callable

import jax
from jax.extend import core as jex_core
from jax.interpreters import ad, batching, mlir

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
    "cond", "while", "pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "checkpoint", "optimization_barrier", "name",
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
    """Whether an equation is a reduction, as XLA sees it (an inner product is one)."""
    if eqn.primitive.name == "dot_general":
        return all(_vector_operands(eqn))
    return eqn.primitive.name in _REDUCTIONS


def _fits_one_kernel(jaxpr, limit: int) -> bool:
    """Whether every equation (recursively) is allowed, every reduction reads fewer than ``limit``
    elements and every array has fewer than ``16 * limit``."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name not in _ALLOWED and not (name in _REWRITTEN and _REWRITTEN[name](eqn)):
            return False
        sizes = [getattr(var.aval, "size", 0) for var in (*eqn.invars, *eqn.outvars)]
        if max(sizes, default=0) >= 16 * limit or (_reduces(eqn) and max(sizes) >= limit):
            return False
        if not all(_fits_one_kernel(sub, limit) for sub in jex_core.jaxprs_in_params(eqn.params)):
            return False
    return True


# An identity over a call's inputs and outputs whose lowering marks the call that produced the
# outputs. Bound over both, so that it meets ``vmap`` whenever the call does (a batching rule runs when
# any operand is batched): there it is dropped, as the sizes checked were those of one problem.
_mark_p = jex_core.Primitive("jaxsecond_single_kernel_mark")
_mark_p.multiple_results = True
_mark_p.def_impl(lambda *values, num_inputs: values)
_mark_p.def_abstract_eval(lambda *avals, num_inputs: avals)
batching.primitive_batchers[_mark_p] = lambda args, dims, num_inputs: (args, dims)
ad.primitive_jvps[_mark_p] = lambda primals, tangents, num_inputs: (primals, tangents)
_CALLEE = "jaxsecond_one_kernel"


def _mark_lowering(ctx, *values, num_inputs):
    for value in values[num_inputs:]:
        owner = value.owner
        op = None if owner is None or isinstance(owner, mlir.ir.Block) else owner.operation
        if op is None or op.name != "func.call" or _CALLEE not in str(op.attributes["callee"]):
            continue  # not the call traced below (an output forwarded from elsewhere)
        attributes = {}
        if "mhlo.frontend_attributes" in op.attributes:
            existing = mlir.ir.DictAttr(op.attributes["mhlo.frontend_attributes"])
            attributes = {existing[i].name: existing[i].attr for i in range(len(existing))}
        attributes["xla_cpu_small_call"] = mlir.ir.StringAttr.get("true")
        # Keeps XLA's call inliner from dissolving the call before the CPU backend sees it.
        attributes["inlineable"] = mlir.ir.StringAttr.get("false")
        op.attributes["mhlo.frontend_attributes"] = mlir.ir.DictAttr.get(attributes)
    return list(values)


mlir.register_lowering(_mark_p, lambda ctx, *values, num_inputs: list(values))
mlir.register_lowering(_mark_p, _mark_lowering, platform="cpu", cacheable=False)


def call(fun: Callable, *args: Any) -> Any:
    """``fun(*args)``, compiled into one kernel on the CPU when it is small enough (see the module).

    ``fun`` is traced once; where the conditions do not hold its equations are inlined as they are.

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
    traced = jex_core.jaxpr_as_fun(closed)
    leaves = jax.tree.leaves(args)
    small = SINGLE_KERNEL_BELOW > 0 and jax.default_backend() == "cpu"
    if small and _fits_one_kernel(closed.jaxpr, SINGLE_KERNEL_BELOW):
        def jaxsecond_one_kernel(*inputs):  # the callee's name identifies the call to mark
            return traced(*inputs)

        out = jax.jit(jaxsecond_one_kernel)(*leaves)
        out = _mark_p.bind(*leaves, *out, num_inputs=len(leaves))[len(leaves):]
    else:
        out = traced(*leaves)
    return jax.tree.unflatten(jax.tree.structure(out_shape), out)
