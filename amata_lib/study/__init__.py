"""Research tools built on the core: the criterion C, the optimal-control toy, convergence, landscapes,
adaptive Amata, the criterion study, and the verdicts of the experiments."""
