"""The embedded demo: a small captioned image world and the CLIP model trained on it."""
