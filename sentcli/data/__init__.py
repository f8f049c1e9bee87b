"""Data: sources (files, folders, hf:) → datasets, tasks (labels, checks) and batching."""
