"""The NeRF turned into a mesh, and its texture baked."""
