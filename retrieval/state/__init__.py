"""What the engine derives and keeps up to date: the catalogue, user profiles, co-occurrence and BM25."""
