"""Gaussians bound to FLAME triangles: model, binding, seeding, PLY, fitting."""
