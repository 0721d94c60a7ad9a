"""Log alerts: a log query counted over a sliding window; a breach opens an incident and alerts."""
