"""Architecture search: cost model (params, FLOPs); searchers arrive with the supernet."""
