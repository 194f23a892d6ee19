"""Capture Scene: plan the views in Blender, render them in a background Blender."""
