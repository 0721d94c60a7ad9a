"""The checking engine: a heap of due times, bounded concurrency, batched
writes, leases shared by checker processes, and status-change events."""
