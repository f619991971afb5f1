"""The documentation site: every public name has a reference entry, and the site builds strictly."""
import importlib.util
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

import jaxsecond

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _reference_identifiers():
    # mkdocstrings renders one entry per "::: identifier" line.
    return {match.group(1) for page in DOCS.rglob("*.md")
            for match in re.finditer(r"^::: *(\S+)", page.read_text(), re.MULTILINE)}


def _identifiers_of(name):
    # The paths under which mkdocstrings documents a public name. `jaxsecond.curveball` is the
    # submodule (griffe reads the sources), so the transform is `jaxsecond.curveball.curveball`.
    obj = getattr(jaxsecond, name)
    if inspect.ismodule(obj):
        return {obj.__name__}
    identifiers = {f"{obj.__module__}.{obj.__qualname__}"}
    if importlib.util.find_spec(f"jaxsecond.{name}") is None:
        identifiers.add(f"jaxsecond.{name}")
    return identifiers


def test_every_public_name_has_a_reference_entry():
    documented = _reference_identifiers()
    missing = [name for name in jaxsecond.__all__ if not _identifiers_of(name) & documented]
    assert not missing, f"add '::: jaxsecond.NAME' to a page in docs/api/ for {missing}"


def test_repository_url_is_written_once():
    # pyproject's [project.urls] Repository is the source; mkdocs.yml, the docs, README and each
    # notebook's install cell must name the same repository.
    path = re.escape(REPOSITORY.removeprefix("https://github.com/"))
    texts = {p.name: p.read_text() for p in [ROOT / "mkdocs.yml", ROOT / "README.md", *DOCS.rglob("*.md"),
                                              *NOTEBOOKS]}
    for name, text in texts.items():
        for found in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", text):
            if "jaxsecond" in found.lower():
                assert re.fullmatch(path, found), (name, found, REPOSITORY)
    assert f"repo_url: {REPOSITORY}\n" in texts["mkdocs.yml"]
    for notebook in NOTEBOOKS:
        assert f"git+{REPOSITORY}" in texts[notebook.name], notebook.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_a_conclusion(path):
    cells = json.loads(path.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown", "the first cell states what the notebook shows"
    assert cells[-1]["cell_type"] == "markdown", "the last cell draws the conclusion"
    assert cells[-1]["source"][0].startswith("## Conclusions")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_accelerator_ready(path):
    source = ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]]
    assert any("print(jax.devices())" in s for s in source if s)
    # TPUs do not run float64 natively: a notebook may turn it on only where the backend runs it.
    assert not any(re.search(r"jax_enable_x64.,\s*True", s) for s in source)


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in
                            ("mkdocs", "material", "mkdocstrings_handlers", "mkdocs_jupyter")),
                    reason="needs the docs extra: pip install -e '.[docs]'")
def test_docs_build_strictly(tmp_path):
    # Strict mode turns every warning into a failure: broken links and references, pages missing
    # from the nav, and griffe's docstring warnings (e.g. a documented parameter that does not exist).
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stdout + build.stderr
    for page in ["index.html", "api/minimize/index.html", "notebooks/minimize_tour/index.html"]:
        assert (tmp_path / "site" / page).is_file(), page
