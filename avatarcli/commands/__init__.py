"""One module per `avatar` subcommand; each defines `register(app)`.

Order here is the order `avatar --help` lists them.
"""

COMMAND_MODULES = [
    "reconstruct",
    "landmarks",
    "fit_flame",
    "encode",
    "invert_gan",
    "head_region",
    "init_gaussians",
    "denoise",
    "render",
    "animate",
    "track",
    "export",
    "weights",
    "doctor",
]
