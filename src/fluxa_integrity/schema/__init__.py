"""Discovering the schema of an undocumented collection, to start a policy from."""
