"""Planning: the frozen specs of networks and studies, the protocol's variants, the planner and source
networks described for a plan. May import probe.errors, probe.plugins, probe.storage, probe.architectures and
probe.data."""
