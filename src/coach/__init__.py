"""coach: a career-coach chatbot that answers from a knowledge base, with citations, offline."""

__version__ = "0.1.0"
