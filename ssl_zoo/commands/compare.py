"""`ssl-zoo compare <dir>... [--out DIR]`: every run below the dirs -> CSV, markdown table and plots."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.errors import UserError

PREFIX = "comparison"


def compare(paths: list[str], out: str | None = None) -> tuple[str, list[Path]]:
    """Writes the tables and plots; returns (the markdown, the files written)."""
    from ssl_zoo.analysis import compare_plots
    from ssl_zoo.analysis.results import gather_metrics, gather_runs, markdown_tables, summarize
    from ssl_zoo.checkpoint import atomic_write_text

    runs = gather_runs(paths)
    summary = summarize(runs)
    out_dir = Path(out if out is not None else paths[0]).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown_tables(runs, summary)
    files = {out_dir / f"{PREFIX}_runs.csv": runs.to_csv(index=False),
             out_dir / f"{PREFIX}_summary.csv": summary.to_csv(index=False),
             out_dir / f"{PREFIX}.md": text}
    for path, content in files.items():
        atomic_write_text(path, content)
    written = list(files)
    plots = ((compare_plots.plot_probe_accuracy, runs, "probes"),
             (compare_plots.plot_accuracy_vs_epochs, runs, "vs_epochs"),
             (compare_plots.plot_online_probe, gather_metrics(runs), "online_probe"))
    for plot, frame, name in plots:
        path = out_dir / f"{PREFIX}_{name}.png"
        if plot(frame, path):
            written.append(path)
    return text, written


def run(args) -> int:
    from ssl_zoo.commands.folders import split_folders

    dirs, rest = split_folders(args.dirs)
    if rest or not dirs:
        raise UserError(f"ssl-zoo compare takes folders (paths or run_dir=<path>), not '{(rest or [''])[0]}'")
    text, written = compare(dirs, args.out)
    print(text)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser("compare", help="table (CSV, markdown) and plots of every run below the given directories")
    p.add_argument("dirs", nargs="+", help="run directories or folders holding them (searched recursively); "
                   "run_dir=<path> works too")
    p.add_argument("--out", default=None, help="where the table and plots go (default: the first directory)")
    p.set_defaults(func=run)
