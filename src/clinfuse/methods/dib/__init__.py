"""DIB: double information bottleneck for robust multimodal sentiment analysis (arXiv 2511.01444).

Modules: ``data`` (MMSA and MAG-BERT/MIB pickles, validated), ``synthetic`` (planted-signal data
in the MMSA schema), ``config``, ``model``.
"""
