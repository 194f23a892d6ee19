"""The radiance field: hash encoding, field, occupancy grid, volume rendering, training."""
