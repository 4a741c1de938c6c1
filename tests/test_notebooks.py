"""The notebooks execute end to end (nbclient), on the embedded models, offline, on the CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", ["quickstart", "stable_diffusion", "llava"])
def test_notebook_executes(name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = NOTEBOOKS / f"{name}.ipynb"
    monkeypatch.setenv("HF_SLUG_NOTEBOOK_QUICK", "1")  # the kernel inherits it: tiny settings
    monkeypatch.setenv("HF_SLUG_EMBEDDED", "1")  # SD / LLaVA notebooks: the embedded models
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        o
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert any(p.suffix == ".png" for p in tmp_path.rglob("*")), os.listdir(tmp_path)
