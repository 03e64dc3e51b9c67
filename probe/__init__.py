"""probe: how transferable are the features of a deep network, layer by layer (Yosinski et al. 2014)."""

from probe.errors import ProbeError
from probe.spec import ArchSpec, DataSpec, NetworkSpec, Recipe

__all__ = ["ProbeError", "ArchSpec", "DataSpec", "NetworkSpec", "Recipe"]
