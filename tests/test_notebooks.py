"""Executes every notebook in notebooks/ top to bottom at its small size (JAXSECOND_SMALL=1)."""
import pathlib

import nbclient
import nbformat
import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    # The kernel inherits this environment; it runs in the repository root, so it imports the
    # checkout's jaxsecond. execute() raises CellExecutionError on the first failing cell.
    monkeypatch.setenv("JAXSECOND_SMALL", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent.parent)}})
    client.execute()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_with_their_outputs(path):
    # scripts/execute_notebooks.py runs them at full size: every code cell has run, in order, none
    # failed, and the notebook shows at least one figure and the device it ran on.
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("Device(id=" in o.get("text", "") for o in outputs)
