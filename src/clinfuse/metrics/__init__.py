"""clinfuse.metrics."""
