"""clinfuse.methods."""
