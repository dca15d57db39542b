"""Reading and writing: storage (local, S3, archives, manifests), audio decoding, label files,
the segment job's tables, tables for other tools, run records, clips."""
