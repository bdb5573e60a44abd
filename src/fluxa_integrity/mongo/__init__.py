"""Everything that talks to MongoDB: connection, dev server, hashing."""
