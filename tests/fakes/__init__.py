"""Faithful stand-ins for hardware interfaces that CI machines do not have."""
