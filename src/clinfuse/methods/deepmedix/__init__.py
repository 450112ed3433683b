"""DeepMedix-R1: grounded chest X-ray reasoning (SFT, cold start, GRPO) and Report Arena
(arXiv 2509.03906).

Modules: ``prompt`` (the official prompt suffix, answer and box parsing), ``rewards`` (format,
accuracy and coordinate rewards; ``compat="deepmedix"`` reproduces the official scores,
``"fixed"`` adds word-level BLEU and box grounding), ``data`` (xraybench-style records, the
embedded pydicom-data radiograph), ``openi`` (real OPEN-I report text from torchxrayvision's
data files), ``synthetic`` (stage-2 reasoning samples), ``metrics`` (ROUGE-L, BLEU, METEOR,
keyword CheXpert-14 label F1), and the training code (``models``, ``train``, ``config``,
``method``)."""
