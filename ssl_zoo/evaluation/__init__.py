"""Evaluation of frozen and trained encoders: feature cache, kNN / L-BFGS probes, SGD linear protocol,
fine-tuning, collapse monitors."""
