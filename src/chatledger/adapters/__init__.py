"""Framework adapters on top of the ledger: they hold no storage logic."""
