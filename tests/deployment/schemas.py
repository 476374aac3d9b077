"""Offline schema checks for what kubernetes-validate does not know: CRD-defined kinds.

A CRD's `openAPIV3Schema` is a JSON schema with Kubernetes extensions. Made
strict the way the API server's structural-schema pruning behaves (an object
with declared properties accepts no others unless it says
x-kubernetes-preserve-unknown-fields), it validates a custom resource
offline. KEDA's Kafka trigger metadata (a map of strings to the CRD) is
checked against the scaler parameters KEDA's module generates
(schema/generated/scalers-schema.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml


def strict(schema: dict) -> dict:
    """The CRD schema as a strict JSON schema (draft 7)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if isinstance(v, dict) else [strict(i) for i in v] if isinstance(v, list) and k in (
        "allOf", "anyOf", "oneOf") else v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in schema:
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    out.pop("nullable", None)
    return out


def crd_validator(crd_file: Path, version: str) -> tuple[str, str, jsonschema.Draft7Validator]:
    """(apiVersion, kind, validator) of one version of a CRD file."""
    crd = yaml.safe_load(crd_file.read_text())
    spec = crd["spec"]
    [entry] = [v for v in spec["versions"] if v["name"] == version]
    schema = strict(entry["schema"]["openAPIV3Schema"])
    # The API server checks these for every object; the CRD schema leaves them open.
    schema.setdefault("properties", {}).update({
        "apiVersion": {"const": f"{spec['group']}/{version}"},
        "kind": {"const": spec["names"]["kind"]},
        "metadata": {"type": "object"},
    })
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return f"{spec['group']}/{version}", spec["names"]["kind"], jsonschema.Draft7Validator(schema)


def errors(validator: jsonschema.Draft7Validator, document: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(document)]


def scaler_parameters(scalers_schema: Path, scaler: str) -> dict[str, dict]:
    document = json.loads(scalers_schema.read_text())
    [entry] = [s for s in document["scalers"] if s["type"] == scaler]
    return {p["name"]: p for p in entry["parameters"]}


def trigger_metadata_errors(metadata: dict, parameters: dict[str, dict]) -> list[str]:
    """What KEDA's scaler would refuse or misread in a trigger's metadata."""
    problems = []
    for key, value in metadata.items():
        name = key[: -len("FromEnv")] if key.endswith("FromEnv") else key
        parameter = parameters.get(name)
        if parameter is None:
            problems.append(f"{key}: not a parameter of the scaler")
            continue
        readable = parameter.get("envVariableReadable") if key.endswith("FromEnv") else parameter.get(
            "metadataVariableReadable")
        if not readable:
            problems.append(f"{key}: the scaler does not read {name} from {'the environment' if key != name else 'metadata'}")
        if not isinstance(value, str):
            problems.append(f"{key}: {value!r} is a {type(value).__name__}; trigger metadata values are strings")
            continue
        if key != name:
            continue
        if parameter.get("allowedValue") and value not in parameter["allowedValue"]:
            problems.append(f"{key}: {value!r} is not one of {parameter['allowedValue']}")
        default = parameter.get("default")
        if default in ("true", "false") and value not in ("true", "false"):
            problems.append(f"{key}: {value!r} is not a boolean string")
        if isinstance(default, str) and default.lstrip("-").isdigit() and not value.lstrip("-").isdigit():
            problems.append(f"{key}: {value!r} is not an integer string")
    for name, parameter in parameters.items():
        required = not parameter.get("optional") and "default" not in parameter and parameter.get(
            "metadataVariableReadable")
        if required and name not in metadata and f"{name}FromEnv" not in metadata:
            problems.append(f"{name}: required by the scaler, missing")
    return problems
