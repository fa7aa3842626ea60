"""Where data lives: the vector store protocol and its two Qdrant adapters, the event log, records and the layout."""
