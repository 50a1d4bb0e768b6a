"""A run directory: its identity, the one reader and writer of each run file, the lock, checkpoints."""
