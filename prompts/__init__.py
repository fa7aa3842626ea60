"""What we say to language models: templates as files, rendering, generator back-ends, the guard.

Stdlib only (the local back-end imports transformers lazily). Evidence arrives as plain data
(built by ``retrieval.explain.evidence``); nothing here can change a score.

Example::

    from prompts import explain_text, make_generator
    out = explain_text(evidence, make_generator("template"), vocabulary)
    out["text"], out["guard"]["fired"]
"""

from prompts.explanations import explain_text, render_template_text
from prompts.generators import Generator, GeneratorError, make_generator
from prompts.guard import GuardResult, check_grounded

__all__ = ["Generator", "GeneratorError", "GuardResult", "check_grounded", "explain_text", "make_generator",
           "render_template_text"]
