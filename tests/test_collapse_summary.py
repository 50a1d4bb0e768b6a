"""The summary `ssl-zoo train` and `ssl-zoo eval` print says whether the run collapsed, and the numbers the
verdict rests on: the final z_std, effective rank (and DINO's teacher entropy) against the rule's thresholds,
and the trained linear top-1 against random init."""

from __future__ import annotations

import math
from pathlib import Path

from ssl_zoo.commands.collapse_summary import collapse_lines
from ssl_zoo.commands.eval import format_results
from ssl_zoo.evaluation.monitors import collapse_verdict

D = 256
REF = 1 / math.sqrt(D)


def _results(z_std: float, **extra) -> dict:
    final = {"z_std": z_std, "z_std_ref": REF, "effective_rank": 12.5, **extra}
    collapsed, why = collapse_verdict(final)
    return {"method": "simsiam", "status": "finished", "collapsed": collapsed, "collapse_reason": why, **final}


def test_a_run_near_the_threshold_says_not_collapsed_and_how_near():
    r = _results(0.23 * REF, linear_top1=84.0, random_init={"linear_top1": 94.67})
    lines = collapse_lines(r)
    assert lines[0] == "collapse: not collapsed (the rule on the last epoch's monitor)"
    assert f"projector z_std {0.23 * REF:.4f} = 0.23/sqrt(d); collapsed below 0.2/sqrt(d) = {0.2 * REF:.4f}" in lines[1]
    assert "effective rank 12.50; collapsed below 2" in lines[2]
    assert "linear top-1 84.00 is below random init 94.67" in lines[3]


def test_a_collapsed_run_says_why():
    lines = collapse_lines(_results(0.05 * REF, linear_top1=50.0, random_init={"linear_top1": 40.0}))
    assert lines[0].startswith("collapse: collapsed")
    assert any(line.startswith("  collapsed because z_std") for line in lines)
    assert lines[-1] == "  linear top-1 50.00 is above random init 40.00"


def test_teacher_entropy_is_shown_against_its_thresholds_when_k_is_known():
    lines = collapse_lines(_results(0.5 * REF, teacher_entropy=0.5 * math.log(1024)), num_outputs=1024)
    assert "  teacher entropy 0.500 log K; collapsed below 0.1 log K or above 0.95 log K" in lines
    assert not any("teacher entropy" in line for line in collapse_lines(_results(0.5 * REF, teacher_entropy=1.0)))


def test_runs_without_a_verdict_print_none_and_the_summary_carries_it(tmp_path):
    assert collapse_lines({"status": "diverged", "collapsed": False}) == []  # no numbers to rest on
    assert collapse_lines({"status": "finished"}) == []  # an older results.json
    text = format_results(Path(tmp_path), _results(0.5 * REF))  # eval.enabled=false: no probe table
    assert "collapse: not collapsed" in text and "no probe results" in text
