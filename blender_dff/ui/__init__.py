"""Panels, messages and the preferences' drawing."""
