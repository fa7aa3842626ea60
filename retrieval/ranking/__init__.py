"""The learned ranker: features, the model, reranking and what drove each score."""
