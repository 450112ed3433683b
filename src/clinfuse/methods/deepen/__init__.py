"""DeepEN (arXiv 2510.08350): offline RL for 4-hourly enteral nutrition in the ICU."""
