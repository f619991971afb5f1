"""Executes the notebooks top to bottom and saves them with their outputs (plots, tables, timings).

    python scripts/execute_notebooks.py                      # every notebook, full size, in place
    python scripts/execute_notebooks.py notebooks/curveball.ipynb
    JAXSECOND_SMALL=1 python scripts/execute_notebooks.py --output-dir /tmp/executed  # quick check

Each notebook runs in a fresh kernel started in the repository root (so it imports this checkout's
jaxsecond) with this process's environment: JAX picks the accelerator it finds, and the notebooks
print it in their first code cell. The script prints that device line and each notebook's wall time.
Install the extras first: pip install -e ".[notebooks]".
"""
import argparse
import pathlib
import sys
import time

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent


def device_line(notebook):
    """The first printed line naming a JAX device (the notebooks print jax.devices())."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if "Device(id=" in line:
                    return line
    return "(no device printed)"


def execute(path, output_dir, timeout):
    notebook = nbformat.read(path, as_version=4)
    # No per-cell timestamps: re-running changes only the outputs, which keeps diffs readable.
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    target = path if output_dir is None else output_dir / path.name
    nbformat.write(notebook, target)
    return device_line(notebook), seconds, target


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=pathlib.Path,
                        default=sorted((ROOT / "notebooks").glob("*.ipynb")))
    parser.add_argument("--output-dir", type=pathlib.Path, default=None,
                        help="write the executed notebooks here instead of in place")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args()
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    for path in args.notebooks:
        print(f"{path.name}: running ...", flush=True)
        device, seconds, target = execute(path.resolve(), args.output_dir, args.timeout)
        print(f"{path.name}: {seconds:.0f} s on {device} -> {target}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
