"""The house's shape, checked: imports only go down the layers of pyproject's import-linter contract, no module
imports itself back through others, and ssl_zoo/'s top level holds only the face and the subpackages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = {"__init__.py", "cli.py", "api.py", "export.py"}

CYCLES = r"""
import grimp
graph = grimp.build_graph("ssl_zoo")
index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in graph.find_modules_directly_imported_by(v):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        part = []
        while True:
            w = stack.pop(); on.discard(w); part.append(w)
            if w == v: break
        if len(part) > 1: out.append(sorted(part))
import sys; sys.setrecursionlimit(10000)
for m in sorted(graph.modules):
    if m not in index: visit(m)
print(out)
"""


def installed_layout(tmp_path: Path) -> Path:
    """The package as a wheel installs it: methods/ and analysis/ inside ssl_zoo/ (pyproject's package-dir)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ssl_zoo", tmp_path / "ssl_zoo", ignore=ignore)
    for folder in ("methods", "analysis"):
        shutil.copytree(ROOT / folder, tmp_path / "ssl_zoo" / folder, ignore=ignore)
    return tmp_path


def test_imports_go_down_the_layers(tmp_path):
    layout = installed_layout(tmp_path)
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([lint, str(ROOT / "pyproject.toml")], cwd=layout, capture_output=True, text=True,
                         env={"PYTHONPATH": str(layout), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_no_import_circles(tmp_path):
    layout = installed_layout(tmp_path)
    out = subprocess.run([sys.executable, "-c", CYCLES], cwd=layout, capture_output=True, text=True,
                         env={"PYTHONPATH": str(layout)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"import circles: {out.stdout}"


def test_top_level_holds_only_the_face_and_subpackages():
    top = {p.name for p in (ROOT / "ssl_zoo").iterdir() if p.suffix == ".py"}
    assert top <= FACE, f"modules outside a subpackage: {sorted(top - FACE)}"
    for pkg in (p for p in (ROOT / "ssl_zoo").iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (pkg / "__init__.py").is_file(), f"{pkg} is not a package (setuptools would leave it out)"


def test_queued_slurm_pickles_still_find_the_train_task():
    """SLURM arrays queued before the subpackages existed hold pickles naming ssl_zoo.launch.TrainTask."""
    import pickle

    from ssl_zoo.launch.launcher import TrainTask

    old_reference = b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\x0essl_zoo.launch\x94\x8c\tTrainTask\x94\x93\x94."
    assert pickle.loads(old_reference) is TrainTask
