"""What runs workflows: the worker that claims due work, and the handlers that do its slow part (the model,
webhooks, executors). The engine (`cbworkflow.engine`) decides each step; this package does the I/O around it."""
