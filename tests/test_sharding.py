"""minimize, CurveBall, SGDW and AdamW on parameters sharded over 8 virtual CPU devices: same answer,
same layout."""

import os
import re
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def report():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    script = os.path.join(here, "sharding_check.py")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(re.findall(r"^(\S+) (.*)$", out.stdout, re.M))


@pytest.mark.parametrize(
    "method",
    ["l-bfgs", "l-bfgs-b", "bfgs", "cg", "newton", "newton-cg", "trust-ncg", "curveball", "curveball-transform",
     "sgdw-transform", "adamw-transform"],
)
def test_sharded_run_equals_unsharded_and_keeps_layout(report, method):
    fields = dict(kv.split("=") for kv in report[method].split())
    assert fields["success"] == "True"
    assert float(fields["maxdiff"]) <= 1e-10
    assert fields["sharding_kept"] == "True"
    assert fields["host_transfers"] == "0"


def test_host_transfer_count_sees_a_callback(report):
    # disp=True prints from inside the loop through a host callback: the count above must find it.
    assert int(report["control"].split("=")[1]) > 0
