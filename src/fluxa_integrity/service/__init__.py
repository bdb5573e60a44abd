"""The always-on process (issue 11): ``fluxa-integrity serve`` and ``jobs``.

Layers (DESIGN.md: cli -> service -> domain): ``jobs`` turns the policy into job definitions,
``tasks`` holds each job's body (the same domain functions the CLI calls), ``history`` and
``leases`` are the state-store side (claims, outcomes, who runs what), ``runner`` runs one
occurrence end to end, ``scheduler`` drives the runner with APScheduler. docs/service.md.
"""
