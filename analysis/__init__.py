"""Reading a run's results (accuracies, decomposition, claims, representations, report), imported as
``probe.analysis`` (this folder is mapped onto it in pyproject.toml)."""
