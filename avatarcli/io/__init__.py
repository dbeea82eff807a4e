"""File input/output shared by every stage: atomic writes, validated reads."""
