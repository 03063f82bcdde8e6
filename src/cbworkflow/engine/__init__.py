"""The engine: decides how an instance moves. It never does I/O; the services record what it decides."""
