"""What a first call compiles: HLO size and compile time per method, beside optax.lbfgs (issue #11).

Chained Rosenbrock at n = 100, float64, every solver inside one ``jax.jit`` (the loops of
``bench/per_iteration.py`` for the peers). For each: the time to trace and lower, the time XLA takes
to compile the lowered module, the number of instructions of the optimised HLO module and of its
largest ``while`` body (the solver's iteration), and how many of the body's instructions are
kernel launches on CPU (fusions, dots, custom calls, conditionals). Medians of ``--repeats``
compilations, each of a fresh function (no cache hit) in this process.

Then what a user waits for on a first call (issue #11's measure): in each of ``--repeats`` fresh
processes (imports excluded), ``js.minimize(chained_rosenbrock, x0, method=...)`` called outside any
jit, that is trace, compile and solve, beside optax.lbfgs's loop in ``jax.jit`` called the first
time; jaxsecond also with XLA's default compiler options (``CPU_COMPILER_OPTIONS = {}``), to show
what its own options cut. Each first call is also read in CPU seconds (the process's user + system
time over the call): XLA compiles a program of many kernels on several threads at once, and a solve
compiled into one kernel (``jaxsecond._single_kernel``) as one LLVM function on one thread, so the
wall-clock ratio depends on how many cores are idle and the CPU ratio does not. Run by hand::

    pip install -e ".[bench]"
    python bench/compile_cost.py            # writes bench/results/compile_cost.md
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
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


FIRST_CALLS = [("l-bfgs", False), ("l-bfgs", True), ("l-bfgs-b", False), ("l-bfgs-b", True), ("optax.lbfgs", False)]


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def first_call(solver, xla_defaults):
    """Wall-clock and CPU seconds from a first call to its result, in this (fresh) process."""
    if xla_defaults:
        from jaxsecond import optimize

        optimize.CPU_COMPILER_OPTIONS = {}
    x0 = jnp.tile(jnp.array([-1.2, 1.0]), N // 2)
    call = (lambda: jax.jit(run_optax)(x0)) if solver == "optax.lbfgs" else (lambda: jaxsecond_solver(solver)(x0))
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    jax.block_until_ready(call())
    return time.perf_counter() - start, _cpu_seconds() - cpu_start


def first_calls(repeats):
    """Median first-call (wall, CPU) seconds of each of :data:`FIRST_CALLS`, over ``repeats`` fresh
    processes (the solvers alternate, so that a change in the machine's load reaches them all)."""
    seconds = {case: [] for case in FIRST_CALLS}
    for _ in range(repeats):
        for solver, xla_defaults in FIRST_CALLS:
            argv = [sys.executable, __file__, "--first-call", solver] + (["--xla-defaults"] if xla_defaults else [])
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            seconds[(solver, xla_defaults)].append(json.loads(out.splitlines()[-1]))
    return {case: tuple(statistics.median(t) for t in zip(*v)) for case, v in seconds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--first-call", help=argparse.SUPPRESS)  # a child process's one measurement
    parser.add_argument("--xla-defaults", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:
        print(json.dumps(first_call(args.first_call, args.xla_defaults)))
        return
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
    firsts = first_calls(args.repeats)
    optax_first = firsts[("optax.lbfgs", False)]
    lines += [
        "",
        "# First call, fresh process",
        "",
        f"Seconds from the first call to its result, median of {args.repeats} fresh processes (imports "
        "excluded): `js.minimize(chained_rosenbrock, x0, method=...)` outside any jit (trace, compile, "
        "solve) and optax.lbfgs's loop in `jax.jit`. \"XLA defaults\": jaxsecond with "
        "`jaxsecond.optimize.CPU_COMPILER_OPTIONS = {}`. The table above compiles every solver inside "
        "the caller's jit, where jaxsecond's options do not apply. CPU s: the process's user + system "
        "time over the call (XLA compiles a program's kernels on several threads, a one-kernel solve on "
        "one: the wall-clock ratio depends on the idle cores, the CPU ratio does not).",
        "",
        "| first call | wall s | / optax.lbfgs | CPU s | / optax.lbfgs |",
        "|---|---|---|---|---|",
    ]
    for (solver, xla_defaults), (sec, cpu) in firsts.items():
        name = solver if solver.startswith("optax") else f"js.minimize {solver}" + (" (XLA defaults)" if xla_defaults else "")
        lines.append(f"| {name} | {sec:.2f} | {sec / optax_first[0]:.2f} | {cpu:.2f} | {cpu / optax_first[1]:.2f} |")
        print(f"  first call, {name}: {sec:.2f} s ({sec / optax_first[0]:.2f}x optax.lbfgs), CPU {cpu:.2f} s "
              f"({cpu / optax_first[1]:.2f}x)", flush=True)
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "results", "compile_cost.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
