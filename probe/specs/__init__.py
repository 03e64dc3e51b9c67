"""Specs: the frozen descriptions everything else reads, the foundation below the library's rooms: a network's spec
(its data, split, architecture, recipe and source), the protocol's variants and the positive control's doses. May
import probe.errors alone."""
