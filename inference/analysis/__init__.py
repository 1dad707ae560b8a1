"""Running an analysis: the analyzer (a study or a pipelined series under a plan) and the session that plans, observes and re-plans."""
