"""The synthetic archive with exact truth, and real backgrounds for it."""
