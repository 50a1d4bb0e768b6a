"""What a run directory holds: its file names, the statuses results.json may hold, the size no run file reaches.

Only ssl_zoo.runs opens these files (tests/test_run_file_owners.py checks it); everything else asks its readers
and writers.
"""

CONFIG, METRICS, RESULTS = "config.yaml", "metrics.csv", "results.json"
SPECTRA = {"": "spectrum.npy", "backbone_": "spectrum_backbone.npy"}  # metric prefix -> its spectrum file
CHECKPOINTS, LAST, PREVIOUS = "checkpoints", "last.pt", "prev.pt"  # <run>/checkpoints/last.pt and prev.pt
LABEL_SUBSETS = "label_subsets"  # eval.protocol=finetune: the indices of each labelled subset
LOCK = "run.lock"

STATUSES = ("finished", "diverged", "failed", "unfinished")  # what results.json's status may say
MAX_BYTES = 50_000_000  # no run file is this large; a bigger one is not read into memory
