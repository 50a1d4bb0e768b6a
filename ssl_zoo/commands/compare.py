"""`ssl-zoo compare <dir>... [--out DIR]`: every run below the dirs -> CSV, markdown table and plots."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.common.errors import UserError

PREFIX = "comparison"


def compare(paths: list[str], out: str | None = None, skipped: list[str] | None = None) -> tuple[str, list[Path]]:
    """Writes the tables and plots; returns (the markdown, the files written). Files that could not be used are
    named in `skipped`; everything is read and checked before the first file is written."""
    from ssl_zoo.analysis import compare_plots, metric_correlation
    from ssl_zoo.analysis.results import gather_metrics, gather_runs, markdown_tables, summarize
    from ssl_zoo.runs.atomic import atomic_write_text
    from ssl_zoo.runs.discovery import check_folders
    from ssl_zoo.runs.verb_output import check_output_folder, output_folder

    skipped = [] if skipped is None else skipped
    check_folders(paths)
    check_output_folder(Path(out if out is not None else paths[0]), "--out")  # before minutes of reading runs
    runs = gather_runs(paths, skipped)
    summary = summarize(runs)
    text = markdown_tables(runs, summary)
    text += metric_correlation.compare_text(runs)  # which label-free metric tracks linear top-1
    metrics = gather_metrics(runs)
    out_dir = output_folder(Path(out if out is not None else paths[0]), "--out")
    files = {out_dir / f"{PREFIX}_runs.csv": runs.to_csv(index=False),
             out_dir / f"{PREFIX}_summary.csv": summary.to_csv(index=False),
             out_dir / f"{PREFIX}.md": text}
    for path, content in files.items():
        atomic_write_text(path, content)
    written = list(files)
    plots = ((compare_plots.plot_probe_accuracy, runs, "probes"),
             (compare_plots.plot_accuracy_vs_epochs, runs, "vs_epochs"),
             (compare_plots.plot_online_probe, metrics, "online_probe"))
    for plot, frame, name in plots:
        path = out_dir / f"{PREFIX}_{name}.png"
        if compare_plots.draw(lambda p, plot=plot, frame=frame: plot(frame, p), path, skipped):
            written.append(path)
    return text, written


def run(args) -> int:
    from ssl_zoo.commands.folders import split_folders
    from ssl_zoo.runs.verb_output import warn_skipped

    dirs, rest = split_folders(args.dirs)
    if rest or not dirs:
        raise UserError(f"ssl-zoo compare takes folders (paths or run_dir=<path>), not '{(rest or [''])[0]}'")
    skipped: list[str] = []
    text, written = compare(dirs, args.out, skipped)
    warn_skipped(skipped)
    print(text)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="table (CSV, markdown) and plots of every run below the given directories")
    p.add_argument("dirs", nargs="+", help="run directories or folders holding them (searched recursively); "
                   "run_dir=<path> works too")
    p.add_argument("--out", default=None, help="where the table and plots go (default: the first directory)")
    p.set_defaults(func=run)
