"""`ssl-zoo report <sweep dir> [--out DIR]`: the collapse report (HTML + markdown, results table, all plots)."""

from __future__ import annotations

from ssl_zoo.analysis.report import report


def run(args) -> int:
    from ssl_zoo.commands.folders import one_folder
    from ssl_zoo.runs.verb_output import warn_skipped

    skipped: list[str] = []
    md, html = report(one_folder([args.sweep_dir], "report", "sweep directory")[0], args.out, skipped)
    warn_skipped(skipped)
    text = md.read_text()
    print(text.split("## Results", 1)[0].rstrip())  # the summary and the paper-vs-here verdicts; the rest in the files
    print(f"\nreport: {html}\nmarkdown: {md} (results table and plots)", flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="collapse report of a sweep: HTML + markdown, results table and plots")
    p.add_argument("sweep_dir", help="the sweep's out_dir (run directories are searched below it); "
                   "sweep_dir=<path> works too")
    p.add_argument("--out", default=None, help="where to write (default: <sweep_dir>/report)")
    p.set_defaults(func=run)
