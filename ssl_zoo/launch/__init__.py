"""Running runs: one run (train, evaluate), sweeps and studies, locally or as SLURM arrays, with preflight."""


def __getattr__(name: str):
    # SLURM arrays queued before this package existed hold pickles that name ssl_zoo.launch.TrainTask.
    if name == "TrainTask":
        from ssl_zoo.launch.launcher import TrainTask

        return TrainTask
    raise AttributeError(f"module 'ssl_zoo.launch' has no attribute {name!r}")
