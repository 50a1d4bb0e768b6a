"""Datasets larger than memory: image folders and WebDataset tar shards read in DataLoader workers.

index.py builds (once, cached as .npy files) one row per sample; sampling.py derives the epoch order and every
crop box from (seed, epoch, index, view); decode.py reads, decodes and crops one sample; bad_samples.py replaces
and records unreadable ones; loader.py turns it into uint8 batches for the trainer and the evaluation.
"""
