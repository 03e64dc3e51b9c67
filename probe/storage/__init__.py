"""Storage: a run directory's layout, network files (weights, metrics, resume state), their states and locks,
atomic writes, the activation store's layout and datasets loaded once per process. May import probe.errors,
probe.plugins, probe.specs, probe.architectures and probe.data."""
