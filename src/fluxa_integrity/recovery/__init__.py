"""Recovery: the playbook's recipes as plans, and one engine that dry-runs, applies, verifies
and undoes them (see model.py for the plan's shape)."""
