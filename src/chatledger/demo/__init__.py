"""The demo: the seed notebook's Joker story, offline, on ChatLedger."""
