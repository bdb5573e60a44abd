"""Backups: full snapshots in mongodump's layout, the catalog, schema backups, retention and
verification by restore. The oplog archive and point-in-time restore build on the manifest's
oplog timestamps (see docs/backup.md); they are not here yet.
"""
