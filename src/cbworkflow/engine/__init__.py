"""The engine: decides how an instance moves (`steps`), evaluates heuristic expressions (`sandbox`) and fills
placeholders (`render`). It never does I/O and imports no store and no HTTP client; what runs the decisions lives
in `cbworkflow.runtime`, and the services record what it decides."""
