"""The blender_dff worker: datasets -> NeRF -> mesh -> teachers -> feature field -> queries.

Runs in any Python with torch; never imports bpy. Importing this package is cheap (torch is
imported by the stages that need it), so the server can start listening at once.
"""
