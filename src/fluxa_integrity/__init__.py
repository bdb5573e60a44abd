"""Fluxa Integrity: runs a MongoDB application's data-integrity incident playbook."""

__version__ = "0.1.0"
