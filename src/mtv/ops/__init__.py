"""Small tensor operations shared across stages (box geometry)."""
