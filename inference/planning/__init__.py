"""Where each model is cut and how its tensors travel: fixed plans and the planner that measures and chooses."""
