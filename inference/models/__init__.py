"""The networks and what travels between their halves: stages, weights, pre/post-processing, exported parts, wire formats, findings."""
