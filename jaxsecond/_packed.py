"""Records of scalars stored in one array, for the state of compiled solver loops.

XLA's CPU runtime launches one kernel per fusion, and it fuses elementwise work into one kernel per
*output*: a loop that carries twenty 0-d arrays (a line search's saved variables, counters, flags)
runs some forty small kernels and copies per trip for them alone (a select and a copy each), which
on a small problem costs more than the objective and the search direction together. Stacked into
one vector, the same arithmetic becomes one fused kernel. No JAX library provides such a record
(``NamedTuple`` and ``chex.dataclass`` keep one leaf per field), hence this small helper.
"""

import jax
import jax.numpy as jnp


def packed_record(typename: str, **kinds):
    """A record type whose fields are 0-d values stored in one array (the only pytree leaf).

    Args:
      typename: the class name.
      **kinds: field name -> ``None`` (read back in the storage dtype), ``jnp.int32`` or ``bool``
        (read back converted; integers are stored exactly up to the storage dtype's mantissa,
        2^24 in float32: for counts such as a line search's trials, not for budgets).

    Returns:
      A class with a constructor ``pack(dtype, **fields)``, a read-only property per field,
      ``_replace(**fields)``, and ``where(pred, a, b)`` (one select for the whole record). Under
      ``vmap`` the array gains leading batch axes; fields are its last axis.

    Example:
      >>> Counters = packed_record("Counters", nit=jnp.int32, done=bool)
      >>> c = Counters.pack(jnp.int32, nit=3, done=False)
      >>> int(c._replace(nit=c.nit + 1).nit), bool(c.done)
      (4, False)
    """
    names = tuple(kinds)

    class Record:
        __slots__ = ("values",)

        def __init__(self, values):
            self.values = values

        @classmethod
        def pack(cls, dtype, **fields):
            if set(fields) != set(names):
                raise TypeError(f"{typename}.pack needs exactly the fields {names}, got {tuple(fields)}")
            if any(jnp.ndim(fields[name]) != 0 for name in names):
                raise ValueError(f"{typename}.pack takes 0-d fields")
            # A concatenation, not a chain of selects: no arithmetic in XLA's cost estimate, which
            # decides whether XLA:CPU runs a program on the calling thread (below 1000 flops).
            return cls(jnp.stack([jnp.asarray(fields[name]).astype(dtype) for name in names]))

        def _replace(self, **fields):
            return type(self).pack(self.values.dtype, **{name: fields.get(name, getattr(self, name)) for name in names})

        @staticmethod
        def where(pred, a, b):
            return Record(jnp.where(jnp.expand_dims(pred, -1), a.values, b.values))

        def __repr__(self):
            return f"{typename}(" + ", ".join(f"{name}={getattr(self, name)}" for name in names) + ")"

    def reader(index, kind):
        def read(self):
            value = self.values[..., index]
            if kind is bool:
                return value != 0
            return value if kind is None else value.astype(kind)

        return property(read)

    for index, (name, kind) in enumerate(kinds.items()):
        setattr(Record, name, reader(index, kind))
    Record.__name__ = Record.__qualname__ = typename
    jax.tree_util.register_pytree_node(Record, lambda r: ((r.values,), None), lambda _, leaves: Record(*leaves))
    return Record
