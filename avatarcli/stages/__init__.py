"""Stage functions that chain library pieces into one step of the pipeline (importable without the CLI).

`avatarcli.stages.denoise.denoise_head`: input-view fit + diffusion rounds (`avatar denoise`);
landmarks.photo_landmarks, fit_flame.fit_photos, init_gaussians.init_head, encode.encode_job,
track, render (plan_render, render_file), animate (animate): one module per stage; `avatar reconstruct` chains them.
"""
