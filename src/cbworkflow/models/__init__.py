"""Pydantic models of everything the API reads and writes."""
