"""Detection: rules evaluated in one streaming pass per collection, producing findings.

Nothing here knows about incidents; a run returns findings and the store keeps their history.
"""
