"""From probabilities to masks and segments: stitching tiles, regions, grouping."""
