"""What we say to language models: templates, rendering, generator back-ends, the guard.

Empty until explanations land (issue 5); stdlib only.
"""
