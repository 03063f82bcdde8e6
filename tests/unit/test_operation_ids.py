"""Operation ids come from one table (api/openapi.py): a route without an entry stops the app from being built."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from cbworkflow.api.openapi import operation_id


def test_an_app_refuses_a_route_without_an_operation_id() -> None:
    app = FastAPI(generate_unique_id_function=operation_id)
    with pytest.raises(LookupError, match=r"GET /api/nowhere has no operation id: add it to OPERATION_IDS"):

        @app.get("/api/nowhere")
        async def nowhere() -> None: ...


def test_a_route_left_out_of_the_document_needs_no_entry() -> None:
    app = FastAPI(generate_unique_id_function=operation_id)

    @app.get("/internal", include_in_schema=False)
    async def internal() -> None: ...

    assert "/internal" not in app.openapi()["paths"]
