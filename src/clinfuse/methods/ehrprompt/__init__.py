"""ehrprompt: multimodal EHR prediction from prompt sentences and clinical notes
(arXiv 2508.20460)."""
