"""Incremental ingestion from operational databases into bronze lakehouse tables."""
