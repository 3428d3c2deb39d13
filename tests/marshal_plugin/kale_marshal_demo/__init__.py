"""A tiny "library" (geometry) plus its kale-magic marshal backend (kale_backend)."""
