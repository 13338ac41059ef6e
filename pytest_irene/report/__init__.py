"""Rendering: text tables for trees, failures and the end-of-session summary. No judging here."""
