"""Counts in words for messages: "1 shard", "2 shards"."""


def count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
