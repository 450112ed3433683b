"""Environments with exact policy values: tabular MDPs and the Oberst-Sontag sepsis simulator."""
