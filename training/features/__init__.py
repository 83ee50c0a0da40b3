"""Customer and product features computed as of a timestamp, the offline sources of Feast."""
