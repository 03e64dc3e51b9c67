"""Reading a run's results: accuracy tables now; the decomposition and representation analyses build on them."""
