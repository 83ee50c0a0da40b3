"""Seeded synthetic storefront: customers with planted personas, a catalogue, sessions."""
