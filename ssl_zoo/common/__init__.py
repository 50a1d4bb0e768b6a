"""Small helpers every layer may use: one-line user errors, the process group, signals, output whose reader has gone, paths."""
