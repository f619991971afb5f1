"""What a first call compiles: HLO size and compile time per method, beside optax.lbfgs (issue #11).

Chained Rosenbrock at n = 100, float64, every solver inside one ``jax.jit`` (the loops of
``bench/per_iteration.py`` for the peers). For each: the time to trace and lower, the time XLA takes
to compile the lowered module, the number of instructions of the optimised HLO module and of its
largest ``while`` body (the solver's iteration), and how many of the body's instructions are
kernel launches on CPU (fusions, dots, custom calls, conditionals). Medians of ``--repeats``
compilations, each of a fresh function (no cache hit) in this process. Run by hand::

    pip install -e ".[bench]"
    python bench/compile_cost.py            # writes bench/results/compile_cost.md
"""

import argparse
import os
import re
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import jaxsecond as js  # noqa: E402
from machine import describe  # noqa: E402
from per_iteration import chained_rosenbrock, run_jaxopt, run_optax, run_optimistix  # noqa: E402

N = 100
METHODS = ["l-bfgs", "l-bfgs-b", "bfgs", "cg", "newton-cg", "trust-ncg", "newton", "curveball"]
KERNELS = ("fusion", "dot", "custom-call", "conditional", "while", "convolution")


def jaxsecond_solver(method):
    bounds = (jnp.full(N, -2.0), jnp.full(N, 2.0)) if method == "l-bfgs-b" else None

    def run(x0):
        return js.minimize(chained_rosenbrock, x0, method=method, bounds=bounds).x

    return run


def hlo_sizes(text):
    """(instructions in the module, instructions in the largest while body, its kernel launches)."""
    computations, current = {}, None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            current = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
            computations[current.lstrip("%")] = []
        elif current and line.startswith("  "):
            computations[current.lstrip("%")].append(line)
    bodies = re.findall(r"\bwhile\(.*?body=%?([\w.\-]+)", text)
    body = max((computations.get(b, []) for b in bodies), key=len, default=[])
    opcodes = [m.group(1) for m in (re.match(r"\s+(?:ROOT )?\S+ = .*? ([\w-]+)\(", line)
                                    for line in body) if m]
    kernels = sum(op in KERNELS for op in opcodes)
    return sum(len(v) for v in computations.values()), len(body), kernels


def measure(make_run, repeats):
    x0 = jnp.tile(jnp.array([-1.2, 1.0]), N // 2)
    lowers, compiles, sizes = [], [], None
    for _ in range(repeats):
        run = make_run()
        fresh = jax.jit(lambda x, run=run: run(x))  # a new function object: no cache hit
        start = time.perf_counter()
        lowered = fresh.lower(x0)
        lowers.append(time.perf_counter() - start)
        start = time.perf_counter()
        compiled = lowered.compile()
        compiles.append(time.perf_counter() - start)
        sizes = hlo_sizes(compiled.as_text())
    return statistics.median(lowers), statistics.median(compiles), sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    solvers = {f"jaxsecond {m}": (lambda m=m: jaxsecond_solver(m)) for m in METHODS}
    solvers.update({"optax.lbfgs": lambda: run_optax, "optimistix.LBFGS": lambda: run_optimistix,
                    "jaxopt.LBFGS": lambda: run_jaxopt})
    rows, base = [], None
    for name, make_run in solvers.items():
        try:
            lower_s, compile_s, (module, body, kernels) = measure(make_run, args.repeats)
        except ImportError as error:  # optimistix / jaxopt are bench extras
            print(f"  {name}: skipped ({error})")
            continue
        total = lower_s + compile_s
        if name == "optax.lbfgs":
            base = total
        rows.append((name, lower_s, compile_s, total, module, body, kernels))
        print(f"  {name}: trace+lower {lower_s:.2f} s, compile {compile_s:.2f} s, HLO {module} "
              f"instructions (loop body {body}, {kernels} kernels)", flush=True)
    lines = [
        "Command: `python bench/compile_cost.py" + (f" --repeats {args.repeats}`" if args.repeats != 3 else "`"),
        "",
        f"Machine: {describe('optax', 'optimistix', 'jaxopt')}.",
        "",
        "# What a first call compiles",
        "",
        f"Chained Rosenbrock, n = {N}, float64, each solver inside one `jax.jit`; median of "
        f"{args.repeats} compilations of a fresh function. HLO: instructions of the optimised module "
        "and of its largest `while` body (the iteration); kernels: the body's fusions, dots, custom "
        "calls, conditionals and loops (one launch each on CPU). Ratio: (trace + lower + compile) / "
        "optax.lbfgs's.",
        "",
        "| solver | trace + lower s | XLA compile s | total s | / optax.lbfgs | HLO module | loop body | body kernels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, lower_s, compile_s, total, module, body, kernels in rows:
        ratio = f"{total / base:.2f}" if base else "-"
        lines.append(f"| {name} | {lower_s:.2f} | {compile_s:.2f} | {total:.2f} | {ratio} | {module} | "
                     f"{body} | {kernels} |")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", "compile_cost.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
