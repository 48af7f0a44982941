"""Training recipes, metrics and the speech judge."""
