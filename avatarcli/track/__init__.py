"""Video tracking: frames -> landmarks per frame (followed face, gaps interpolated) -> one batched
FLAME fit over the whole clip (shared identity, per-frame motion, temporal prior) -> expression file."""
