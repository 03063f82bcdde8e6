"""Template files shipped with the package (the reference template of the contract)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

REFERENCE_TEMPLATE = "county-outreach-v1.json"


def reference_template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resources.files(__name__).joinpath(REFERENCE_TEMPLATE).read_text())
    return data
