"""The HTTP API (FastAPI). Routes parse, authorise and call services; nothing here touches the store directly."""
