"""The worker process from Blender's side: its environment, starting it, talking to it."""
