"""Shard I/O, decoding and the training stream."""
