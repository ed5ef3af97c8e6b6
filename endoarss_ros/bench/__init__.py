"""Benchmarks: the Predictor against the bare network, the node against a naive node and a
pass-through node, always as ratios measured in the same run."""
