"""MEETI: aligned ECG waveform, plotted image, beat-level parameters and interpretation text
(arXiv 2507.15255)."""
