"""clinfuse.robustness."""
