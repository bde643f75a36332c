"""Metrics, result tables, interpretability and calibration."""
