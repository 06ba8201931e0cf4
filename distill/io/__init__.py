"""Input/output formats: checkpoints, export folders, one loader for both, atomic writes."""
