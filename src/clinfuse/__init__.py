"""clinfuse."""
