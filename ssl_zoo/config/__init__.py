"""The config: composed by Hydra from conf/, checked in one pass, errors as one line.

compose.py (Hydra, one-line errors) -> checks.py (types, schema, each part's own rule) -> load.py (load_config,
check_run_config); schema.py types the keys, overrides.py reads sweeps, ablations.py checks ablation files,
footprint.py the memory a config needs, run_paths.py the run directory's path.
"""
