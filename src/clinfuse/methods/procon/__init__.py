"""ProCon: projection-constrained instruction fine-tuning that keeps the refusal direction
(arXiv 2509.06795)."""
