"""Fidelity and privacy metrics of synthetic data, the privacy gate, and the evaluation plots."""
