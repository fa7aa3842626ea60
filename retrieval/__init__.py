"""Storage and ranking: the vector store, the event log, candidate sources, fusion, the pipeline.

Imports ``encoders`` and Qdrant; knows nothing of HTTP.
"""
