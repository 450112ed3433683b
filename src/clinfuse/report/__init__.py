"""clinfuse.report."""
