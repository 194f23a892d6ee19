"""The last resort of a fill: the open loops MeshFix left (or whose fill was dropped) closed by
a fan of triangles around a new vertex each, which fairing then moves onto the surface. A fan
adds one face on each open edge and edges to its own centre only, so it closes any set of
loops, even loops that touch themselves (split first into simple cycles, each with its own
centre), without ever using an edge a third time."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..mesh.topology import edge_keys


def simple_cycles(edges: np.ndarray) -> list[list[int]]:
    """The directed open edges (E, 2) split into simple cycles, as lists of edge indices; edges
    that close no cycle (a loop broken by an edge left out) are left out."""
    leaving: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(edges[:, 0].tolist()):
        leaving[a].append(i)
    heads = edges[:, 1].tolist()
    cycles = []
    for origin in list(leaving):
        while leaving[origin]:
            path: list[int] = []
            at = {origin: 0}  # vertex on the path -> the number of path edges before it
            vertex = origin
            while leaving[vertex]:
                path.append(leaving[vertex].pop())
                vertex = heads[path[-1]]
                if vertex not in at:
                    at[vertex] = len(path)
                    continue
                first = at[vertex]  # a cycle closes: take it off the path
                cycles.append(path[first:])
                for edge in path[first:-1]:
                    del at[heads[edge]]
                path = path[:first]
                if not path:
                    break
    return cycles


def fan(edges: np.ndarray, cycles: list[list[int]], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A centre (C, 3) per cycle, at the mean of its vertices, and the faces (Q, 3) closing each
    cycle around its centre, wound against the edges (the surface's winding); the centres are
    numbered from len(points)."""
    centres = np.array([points[edges[cycle, 0]].mean(0) for cycle in cycles]).reshape(-1, 3)
    faces = [np.column_stack([edges[cycle, 1], edges[cycle, 0], np.full(len(cycle), len(points) + i)])
             for i, cycle in enumerate(cycles)]
    return centres, np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)


def holes_and_rims(edges: np.ndarray, rim: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """The simple cycles of the open edges (E, 2): those to fill, and those with an edge whose
    key (topology.edge_keys) is in `rim`, the scene's outer rim, never to fill."""
    holes, rims = [], []
    on_rim = np.isin(edge_keys(edges), rim)
    for cycle in simple_cycles(edges):
        (rims if on_rim[cycle].any() else holes).append(cycle)
    return holes, rims
