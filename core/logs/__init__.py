"""Logs: ingest, storage, search, live tail and log alerts (issue 13); the query language is in ``query``."""
