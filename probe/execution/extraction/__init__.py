"""The parts of an extraction, one concern a module: which images, what is kept of each layer, how a network's group
is written, and a store's settings; :mod:`probe.execution.extract` runs them over a run's networks."""
