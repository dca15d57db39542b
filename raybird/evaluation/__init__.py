"""Scoring against labels (pixel, event and the field's measures), reports and plots."""
