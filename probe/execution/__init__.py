"""Execution: training one network, sweeping a plan over executors (this process or dask.distributed),
extracting activations and testing layer resets. May import the rooms below it: probe.planning, probe.storage,
probe.architectures, probe.data and the foundation (probe.specs, probe.errors, probe.plugins); never the analysis,
which reads what execution writes."""
