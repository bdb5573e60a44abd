"""The web face (issue 12): the HTTP API, the responder's console and the public status page.

Like cli/, a thin face over the domain packages: every route calls the same function the CLI
command calls (incidents.api.Incidents, checks.history, backup.catalog, recovery.engine,
service.history), never a second implementation. ``create_app()`` in app.py builds it;
``fluxa-integrity web`` serves it (docs/web.md).
"""
