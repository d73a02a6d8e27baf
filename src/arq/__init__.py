"""The job module: ARQ-backed background jobs with typed tasks, history, ownership and a REST API.

Never put `src/` itself on `sys.path`: this package would then shadow the `arq` library.
"""
