"""Anomaly monitors (S10, S11) and validation errors in application logs (S12).

``volume`` counts an interval's writes from the oplog and samples the written documents,
``field_stats`` measures their fields and holds the learned profile (`schema infer`),
``log_errors`` classifies log entries, ``baseline`` is the robust statistics, ``runner`` ties
them into a monitor run whose findings go to the checks' findings store. docs/monitors.md.
"""
