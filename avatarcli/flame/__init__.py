"""The FLAME head model: safe loading, forward (LBS), landmarks, fitting."""
