"""Running an analysis: the analyzer (a study or a pipelined series under a plan), a worklist spread over
devices, and the session that plans, observes and re-plans."""
