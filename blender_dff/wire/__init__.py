"""What the add-on and the worker agree on; bpy-free and torch-free, both sides import it."""
