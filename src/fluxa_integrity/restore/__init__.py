"""Restore: from a snapshot into a separate target database, diff it against the live database,
promote chosen collections or documents back (a restore-and-promote recovery plan, applied and
undone by the recovery engine), and verification drills.
Restores read the backup files, not a server, so filters are evaluated here in Python.
"""
