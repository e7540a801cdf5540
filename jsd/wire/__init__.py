"""The wire shapes of jsd: one typed model per JSON shape of the REST API and the events.

Pure data (pydantic v2 models and annotated types, no I/O): jsd/api validates requests with them and builds
its OpenAPI document from them, jsd/events builds the event JSON Schemas from them, jsd/ui may read them.
docs/wire-models.md says why pydantic and what a validation costs.
"""

from __future__ import annotations

from jsd.wire.base import Closed, Invalid, field_errors, integer_fields, json_schema, rule_broken, type_schema, validate

__all__ = [
    "Closed", "Invalid", "field_errors", "integer_fields", "json_schema", "rule_broken", "type_schema", "validate",
]  # fmt: skip
