"""Datasets in memory and streamed, and views (batched augmentations)."""
