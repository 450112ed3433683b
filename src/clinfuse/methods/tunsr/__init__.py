"""Tunsr: unified neurosymbolic reasoning on knowledge graphs (arXiv 2507.03697)."""
