"""Learning from the event log (never imported by serving code): the encoder and the reranker trainers."""
