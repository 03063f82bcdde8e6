"""JSON columns are written and read with orjson, and with `json` where orjson would refuse or lose a value."""

from __future__ import annotations

from typing import Any

import pytest

from cbworkflow.store.schema import json_text, json_value


@pytest.mark.parametrize(
    "value",
    [
        {"door_notes": "prefers texting", "ward": 5, "score": 2.5, "ok": True, "none": None, "list": [1, "a"]},
        {"name": "Zoë Ünal", "emoji": "🗳️"},
        {"big": 2**70, "small": -(2**80), "edge": 2**64 - 1, "floor": -(2**63)},
        [],
        "plain text",
        {"phone": "+15552013344", "digits": "1234567890123456789012"},
    ],
)
def test_every_value_comes_back_exactly(value: Any) -> None:
    back = json_value(json_text(value))
    assert back == value
    assert json_value(json_text(value).encode()) == value  # drivers may hand bytes


def test_what_orjson_refuses_is_written_by_json() -> None:
    assert json_value(json_text({1: "x"})) == {"1": "x"}  # as json.dumps always wrote it
    assert json_value('{"n": NaN}')["n"] != json_value('{"n": NaN}')["n"]  # NaN written earlier still reads
