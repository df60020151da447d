"""The preview container image: Dockerfile and entrypoint (copied alone into the image)."""
