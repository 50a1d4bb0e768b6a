"""Each run file has one owner: only ssl_zoo/runs/ names config.yaml, metrics.csv, results.json, the spectra and
run.lock (everything else calls its readers and writers), and only ssl_zoo/launch/sweep_files.py names the sweep
manifests and task states in jobs/. Names inside messages, comments and docstrings are fine: a path is not."""

from __future__ import annotations

import ast
from pathlib import Path

from ssl_zoo.runs.layout import CONFIG, LOCK, METRICS, RESULTS, SPECTRA

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = (CONFIG, METRICS, RESULTS, *SPECTRA.values(), LOCK)
OWNERS = {"run files": "ssl_zoo/runs/", "sweep manifests": "ssl_zoo/launch/sweep_files.py"}
# (file, name): the same name for something that is not a run file
OTHER_FILES = {("ssl_zoo/config/ablations.py", CONFIG): "conf/config.yaml, the shipped config"}


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _kind(text: str) -> str | None:
    """Which owner's files a string is the name (or the end of a path) of."""
    if any(text == name or text.endswith("/" + name) for name in RUN_FILES):
        return "run files"
    if (text.startswith("sweep-") and text.endswith(".json")) or text.endswith("_state.json"):
        return "sweep manifests"
    return None


def _text(node: ast.AST) -> str | None:
    """A string in code; an f-string with {} for each value it formats."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def names_used(source: str) -> list[tuple[int, str, str]]:
    """(line, string, kind) of every string in code that names a run file or manifest."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [(n.lineno, text, kind) for n in ast.walk(tree)
            if id(n) not in skip and (text := _text(n)) is not None and (kind := _kind(text))]


def test_the_check_finds_paths_and_leaves_messages_alone():
    source = '''"""Reads results.json."""
def f(run_dir, d, job):
    """metrics.csv"""
    print(f"{run_dir} has no results.json yet")  # a message
    a = run_dir / "results.json"
    b = f"{d}/metrics.csv"
    c = d / f"{job}_state.json"
    return a, b, c, d / f"sweep-{job}.json"
'''
    assert sorted({(line, kind) for line, _, kind in names_used(source)}) == [
        (5, "run files"), (6, "run files"), (7, "sweep manifests"), (8, "sweep manifests")]


def test_only_the_owners_name_run_files_and_manifests():
    found = []
    for path in sorted([*(ROOT / "ssl_zoo").rglob("*.py"), *(ROOT / "analysis").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        for line, text, kind in names_used(path.read_text()):
            if not rel.startswith(OWNERS[kind]) and (rel, text) not in OTHER_FILES:
                found.append(f"{rel}:{line}: {text!r} (its owner: {OWNERS[kind]})")
    assert not found, "\n".join(found)
