"""Stage functions that chain library pieces into one step of the pipeline (importable without the CLI).

`avatarcli.stages.denoise.denoise_head`: input-view fit + diffusion rounds (`avatar denoise`).
"""
