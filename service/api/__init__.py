"""HTTP controllers, one per resource, each with its schemas beside it."""
