"""Training: the generic loop, the run-folder driver and one recipe per objective."""
