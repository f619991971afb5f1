"""The machine line every benchmark writes at the top of its results file."""

import importlib.metadata
import os
import platform

import jax


def describe(*packages: str) -> str:
    """CPU model, cores, load average, the versions of ``jax`` and ``packages``, and the device."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = [f"jax {jax.__version__}"]
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    device = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores (load average {load}; a shared machine: timings are noisy); "
        f"{', '.join(versions)}; device {device.device_kind} ({jax.default_backend()})"
    )
