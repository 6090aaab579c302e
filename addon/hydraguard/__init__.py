"""hydraguard: stops distillation clusters in front of model APIs."""
