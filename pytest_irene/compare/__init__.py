"""Comparison: a predicted tree against its baseline, judged by tolerance and budget.

Library code (no pytest): the plugin gates with it, and ``irene compare`` uses it on run files.
"""
