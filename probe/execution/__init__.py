"""Execution: training one network, sweeping a plan over executors (this process or dask.distributed),
extracting activations and testing layer resets. May import everything below the command line: probe.planning,
probe.storage, probe.architectures, probe.data."""
