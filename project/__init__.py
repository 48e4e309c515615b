"""Custos Django project: settings, URLs and the process entry points."""
