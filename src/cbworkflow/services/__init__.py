"""Services: what the API, CLI and worker call. They check rules, ask the engine, and record through the store."""
