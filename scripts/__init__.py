"""Maintenance scripts: each runs as `python -m scripts.NAME` (docs/development.md)."""
