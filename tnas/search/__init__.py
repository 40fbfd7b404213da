"""How points are chosen: studies, samplers, the driver, the Pareto store. Imports no torch."""
