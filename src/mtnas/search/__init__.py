"""Architecture search that knows no model family: the `Problem` a method poses (space, scoring, cost, budget,
population log), `Strategy` subclasses that solve it (`conf/search/*.yaml`), fronts, hypervolume and the
selection rule, budgets, the append-only population log and counted cost/latency."""
