"""Blender operators: each turns a user's action into a worker request or a scene change."""
