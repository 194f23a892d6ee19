"""Worker replies turned into Blender data: cameras, meshes, selections, textures, images."""
