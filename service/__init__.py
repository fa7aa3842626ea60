"""The outside world: the Litestar app, HTTP schemas, settings, CLI and batch jobs.

A thin shell over the engine (``encoders``, ``retrieval``, ``prompts``).
"""
