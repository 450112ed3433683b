"""DPsurv: evidential, prototype-based whole-slide survival analysis (arXiv 2510.00053)."""
