"""The storage gate: the only code that builds queries and translates driver errors."""
