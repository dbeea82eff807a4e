"""Rendering Gaussians: gsplat on CUDA, a pure-torch rasterizer everywhere."""
