"""This repository's own studies of the paper: the reproduction report, the co-adaptation ladder and the
initialization study, their collectors and the committed report they render (docs/reproduction.md). They may import
the whole toolkit (probe, probe.analysis, probe.data); nothing in the toolkit imports them."""
