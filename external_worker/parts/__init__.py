"""Separate All: the whole mesh cut into named objects, each closed, the background's holes filled."""
