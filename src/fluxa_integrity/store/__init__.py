"""The tool's own state (runs, findings, sightings, baselines): SQLAlchemy + Alembic.

SQLite under $FLUXA_HOME by default; PostgreSQL (or anything SQLAlchemy speaks) through
``FLUXA_STATE_URL`` or ``state_url`` in config.yaml. The schema is created and upgraded by
Alembic migrations when the store is opened, so both back ends always have the same schema.
"""

from .db import Store, open_store, state_url  # noqa: F401
