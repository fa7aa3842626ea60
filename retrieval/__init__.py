"""The engine, one package a concern:

- ``storage``: the vector store protocol and its two Qdrant adapters, the event log, records, layout;
- ``state``: what is derived and kept current: catalogue, profiles, co-occurrence, BM25, facets;
- ``query``: sentences into constraints and anchor items;
- ``pipeline``: the recommend pipeline as named steps (request types, context, sources, fusion, diversity);
- ``ranking``: the learned ranker's features, model, reranking and drivers;
- ``explain``: evidence for an explanation, read off the scoring;
- ``engine``, ``registry``, ``reindex``, ``limits``: the wiring, the trained models, the switch to a
  new encoder, and every input limit;
- ``training`` and ``evaluation``: learning from the log and measuring offline; serving never
  imports them (tests/test_architecture.py).

Imports ``encoders`` and Qdrant; knows nothing of HTTP.
"""
