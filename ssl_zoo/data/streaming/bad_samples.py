"""Unreadable samples on a long run: replaced by a deterministic other sample, listed in <run>/bad_samples.txt,
and the run stopped (one line) once more than data.max_bad_fraction of the dataset proved unreadable."""

from __future__ import annotations

from pathlib import Path

from ssl_zoo.common.errors import UserError

FILE_NAME = "bad_samples.txt"
Entry = tuple[int, str, str]  # (index row, file, reason)


class BadSampleLog:
    def __init__(self, run_dir: Path | None, dataset_size: int, max_fraction: float):
        self.path = run_dir / FILE_NAME if run_dir is not None else None
        self.limit = max_fraction * dataset_size
        self.dataset_size, self.max_fraction = dataset_size, max_fraction
        self.seen: set[int] = set()
        if self.path is not None and self.path.is_file():  # a resumed run: already listed ones are not repeated
            for line in self.path.read_text().splitlines():
                head = line.split("\t", 1)[0]
                if head.isdigit():
                    self.seen.add(int(head))

    def add(self, entries: list[Entry]) -> None:
        new = []
        for index, file, reason in entries:
            if index not in self.seen:
                self.seen.add(index)
                new.append(f"{index}\t{file}\t{' '.join(reason.split())}\n")
        if new and self.path is not None and self.path.parent.is_dir():
            with open(self.path, "a") as f:  # small appends: whole lines even with several ranks writing
                f.write("".join(new))
        if len(self.seen) > self.limit:
            where = f"; they are listed in {self.path}" if self.path is not None else ""
            raise UserError(f"{len(self.seen)} of {self.dataset_size} samples could not be read or decoded, more "
                            f"than data.max_bad_fraction={self.max_fraction:g}{where}; fix or remove them, or "
                            "raise data.max_bad_fraction")


def list_eval_samples(run_dir: Path | None, entries: list[Entry]) -> None:
    """Unreadable images met by the evaluation (replaced like training ones), listed in the same file as
    `eval<TAB>file<TAB>reason` lines, each file once. They do not count towards data.max_bad_fraction."""
    if run_dir is None or not entries or not run_dir.is_dir():
        return
    path = run_dir / FILE_NAME
    listed = set()
    if path.is_file():
        listed = {line.split("\t")[1] for line in path.read_text().splitlines() if line.startswith("eval\t")}
    new = []
    for _, file, reason in entries:
        if file not in listed:
            listed.add(file)
            new.append(f"eval\t{file}\t{' '.join(reason.split())}\n")
    if new:
        with open(path, "a") as f:
            f.write("".join(new))
