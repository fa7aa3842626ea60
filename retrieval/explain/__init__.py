"""Evidence for why an item is recommended, read off the actual scoring."""
