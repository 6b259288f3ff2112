"""Integrations: FastAPI (``integrations.fastapi``) and notebooks (``integrations.notebook``).

Each imports its optional dependency only when used; a missing one raises MissingExtraError
naming the extra (``xlibrary[fastapi]``, ``xlibrary[notebook]``).
"""
