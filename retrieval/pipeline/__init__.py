"""The online recommend pipeline: request types, context, candidate sources, fusion, diversity and the recommender's steps."""
