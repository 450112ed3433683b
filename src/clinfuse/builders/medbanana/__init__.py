"""Med-Banana-50K: instruction-based medical image editing data set builder with an editor, a
rubric judge, history-aware refinement and failed attempts kept for preference learning
(arXiv 2511.00801)."""
