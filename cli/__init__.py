"""The ``probe`` command line, imported as ``probe.cli`` (this folder is mapped onto it in pyproject.toml)."""
