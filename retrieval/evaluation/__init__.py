"""Offline evaluation (never imported by serving code): datasets, the replay, stages, metrics and the report."""
