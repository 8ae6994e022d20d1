"""What changed in what the user saw between two versions of a recording."""
