"""previews."""
