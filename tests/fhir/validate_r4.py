"""Validate FHIR resources against FHIR R4 with two independent checkers.

Usage: validate_r4.py SCHEMA FILE...

Each FILE holds one resource (a Bundle's entries are checked one by one as
well). A resource must pass both:

- the `fhir.resources` 6.4.0 models, which are FHIR R4 4.0.1 (cardinality,
  required elements, one value[x], unknown elements, date formats);
- the R4 JSON schema (required-binding codes such as status, and
  primitive types), through `jsonschema`'s Draft 6 validator.

Prints one line per resource, `OK` or `INVALID` with the reasons, and exits
1 if any resource is invalid.
"""
import json
import sys

import fhir.resources as fr
from fhir.resources import get_fhir_model_class
from jsonschema import Draft6Validator
from pydantic import ValidationError

assert fr.__fhir_version__ == "4.0.1", fr.__fhir_version__


def model_errors(resource):
    kind = resource.get("resourceType")
    try:
        get_fhir_model_class(kind).parse_obj(resource)
        return []
    except KeyError:
        return [f"model: unknown resourceType {kind!r}"]
    except ValidationError as e:
        return [f"model: {'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()]


class Schema:
    def __init__(self, path):
        with open(path) as f:
            self.schema = json.load(f)
        self.kinds = set(self.schema["discriminator"]["mapping"])
        self.validators = {}

    def validator(self, kind):
        if kind not in self.validators:
            # Validate against the one definition: the top-level oneOf only
            # says "none of 140 matched".
            one = {k: v for k, v in self.schema.items() if k not in ("oneOf", "discriminator")}
            one["$ref"] = f"#/definitions/{kind}"
            self.validators[kind] = Draft6Validator(one)
        return self.validators[kind]

    def errors(self, resource):
        kind = resource.get("resourceType")
        if kind not in self.kinds:
            return [f"schema: unknown resourceType {kind!r}"]
        return sorted(
            f"schema: {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:200]}"
            for e in self.validator(kind).iter_errors(resource)
        )


def main():
    schema = Schema(sys.argv[1])
    bad = 0
    for path in sys.argv[2:]:
        with open(path) as f:
            top = json.load(f)
        resources = [top]
        if top.get("resourceType") == "Bundle":
            resources += [e["resource"] for e in top.get("entry", [])]
        for r in resources:
            errors = model_errors(r) + schema.errors(r)
            name = f"{path}: {r.get('resourceType')}/{r.get('id')}"
            if errors:
                bad += 1
                print(f"INVALID {name}")
                for e in errors:
                    print(f"  {e}")
            else:
                print(f"OK {name}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
