"""Maintenance windows: one-off and recurring periods in which covered monitors are left alone."""
