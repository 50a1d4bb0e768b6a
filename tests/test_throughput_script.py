"""benchmarks/throughput.py runs on the CPU in --tiny mode and reports every (setup, method) row."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("byol", "simsiam", "mocov2", "dino")


def test_tiny_cpu_run_writes_a_row_per_method_and_setup(tmp_path):
    results, rows_file = tmp_path / "RESULTS.md", tmp_path / "rows.jsonl"
    results.write_text("# existing\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cpu", "--tiny",
                          "--results", str(results), "--json", str(rows_file)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    md = results.read_text()
    assert md.startswith("# existing\n")  # appended, never overwritten
    assert f"torch {torch.__version__}" in md and "CPU" in md
    assert "Fashion-MNIST" in md or "random uint8" in md  # the data source is named
    table = [line for line in md.splitlines() if line.startswith("| r")]
    assert len(table) == 2 * len(METHODS)
    for setup in ("r18 16px", "r50 24px"):
        for method in METHODS:
            assert any(line.startswith(f"| {setup} |") and f"| {method} |" in line for line in table), (setup, method)
    assert "| dino | 1x16 + 1x16 + 6x8 |" in md  # multi-crop: 2 global + 6 local crops at half size
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert len(rows) == 2 * len(METHODS)
    for row in rows:
        for key in ("ceiling_eager", "e2e_eager", "ratio"):
            assert math.isfinite(row[key]) and row[key] > 0, (row, key)
        assert row["ratio"] == row["e2e_eager"] / row["ceiling_eager"]
        assert row["peak_gib_eager"] is None  # no GPU memory to report on the CPU
    # rows saved by --json (as a GPU machine returns them) render the same section without measuring again
    again = tmp_path / "again.md"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--from-json", str(rows_file),
                          "--results", str(again)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert again.read_text() == md[len("# existing\n"):]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_one_clear_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", "cuda",
                          "--results", "-"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().splitlines() == [
        "throughput.py: --device cuda but no CUDA device is visible (use --device cpu)"]
