"""The model base and the two things done with models: validating JSON and describing it as JSON Schema."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "Closed", "Invalid", "field_errors", "integer_fields", "json_schema", "rule_broken", "type_schema", "validate",
]  # fmt: skip

M = TypeVar("M")


class Closed(BaseModel):
    """A JSON object with exactly the declared members, each of exactly its JSON type (no coercion).

    Strict: "1" is not an integer, 1 is not a boolean. Patterns use Python's `re`, whose syntax covers the
    lookahead some patterns need and which reads them as JSON Schema validators do.
    """

    model_config = ConfigDict(extra="forbid", strict=True, regex_engine="python-re", frozen=True, defer_build=True)


class Invalid(Exception):
    """A value that is not of its wire shape: the (field, reason) pairs, fields named as on the wire."""

    def __init__(self, errors: list[tuple[str | None, str]]) -> None:
        super().__init__("; ".join(f"{f}: {r}" if f else r for f, r in errors))
        self.errors = errors


def validate(shape: type[M] | Any, value: Any) -> Any:
    """`value` (parsed JSON) as an instance of `shape` (a model or an annotated type); else `Invalid`."""
    try:
        return _adapter(shape).validate_python(value)
    except ValidationError as exc:
        raise Invalid(field_errors(exc)) from None


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(shape: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(shape)
    if adapter is None:
        adapter = _ADAPTERS[shape] = TypeAdapter(shape)
    return adapter


def field_errors(exc: ValidationError) -> list[tuple[str | None, str]]:
    """Each error as (top-level member, reason in the API's words); union tags are not part of the name."""
    out: list[tuple[str | None, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        ctx = error.get("ctx") or {}
        if error["type"] == RULE:
            out.append((ctx["field"], ctx["reason"]))
            continue
        names = [str(part) for part in error["loc"] if isinstance(part, str) and not part.startswith("variant:")]
        out.append((names[0] if names else None, _reason(error["type"], ctx, error["msg"])))
    return out


RULE = "rule"


def rule_broken(field: str, reason: str) -> PydanticCustomError:
    """For a model validator: a rule across members was broken; `field` is the member to name."""
    return PydanticCustomError(RULE, "{field}: {reason}", {"field": field, "reason": reason})


_REASONS: dict[str, str] = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_unicode": "must be Unicode text (no lone surrogates)",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "string_too_long": "must be at most {max_length} characters",
    "string_too_short": "must be at least {min_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be {expected}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _reason(kind: str, ctx: dict[str, Any], message: str) -> str:
    template = _REASONS.get(kind)
    if template is None:
        return str(ctx.get("reason", message))
    return template.format(**ctx)


class _Schema(GenerateJsonSchema):
    """JSON Schema without pydantic's generated property titles: the names say it, descriptions say more."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """`X | None` as a type list where X is a plain typed schema, the short form JSON Schema allows."""
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str) and not {"$ref", "enum", "const"} & set(inner):
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        out.pop("default", None)  # an absent member is simply absent; defaults are the handlers' business
        return out


def json_schema(
    models: list[type[BaseModel]], ref_template: str = "#/components/schemas/{model}"
) -> tuple[dict[type[BaseModel], JsonSchemaValue], dict[str, JsonSchemaValue]]:
    """The schemas of `models` (referencing each other by `ref_template`) and the definitions they share."""
    found, top = models_json_schema(
        [(model, "validation") for model in models], ref_template=ref_template, schema_generator=_Schema
    )
    return {model: found[(model, "validation")] for model in models}, top.get("$defs", {})


def type_schema(shape: Any) -> JsonSchemaValue:
    """The JSON Schema of one annotated type (a path or query parameter)."""
    return _adapter(shape).json_schema(schema_generator=_Schema)


def integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The members of `model` that are JSON integers (query strings carry them as digits)."""
    found = _INTEGERS.get(model)
    if found is None:
        properties = type_schema(model)["properties"]
        found = _INTEGERS[model] = frozenset(
            name
            for name, schema in properties.items()
            if any("integer" in _types(s) for s in schema.get("anyOf", [schema]))
        )
    return found


_INTEGERS: dict[type[BaseModel], frozenset[str]] = {}


def _types(schema: JsonSchemaValue) -> list[str]:
    found = schema.get("type", [])
    return [found] if isinstance(found, str) else list(found)
