"""Datasets, class splits and tasks, imported as ``probe.data`` (this folder is mapped onto it in pyproject.toml)."""
