"""Planning: the planner of a study's networks and the source networks described for a plan. May import
probe.errors, probe.plugins, probe.specs, probe.storage, probe.architectures and probe.data."""
