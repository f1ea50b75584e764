"""Checks a DescribeJob answer against the DescribeJobResponse shape of the
IoT service model that botocore ships: every member name must exist in the
model and every value must have the model's type (and enum values must be
the model's). Prints the list of problems as JSON (empty when it conforms).

Usage: botocore_validate.py BASE_URL JOB_ID
"""
import json
import sys
import urllib.request

import botocore.session

base_url, job_id = sys.argv[1:3]
with urllib.request.urlopen(f"{base_url}/jobs/{job_id}") as response:
    body = json.load(response)

model = botocore.session.get_session().get_service_model("iot")
shape = model.operation_model("DescribeJob").output_shape
problems = []


def check(value, shape, path):
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object")
            return
        for key, item in value.items():
            if key not in shape.members:
                problems.append(f"{path}.{key}: not in the model")
            else:
                check(item, shape.members[key], f"{path}.{key}")
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, shape.member, f"{path}[{i}]")
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map")
            return
        for key, item in value.items():
            check(key, shape.key, f"{path} key")
            check(item, shape.value, f"{path}[{key}]")
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: expected an integer")
    elif kind in ("double", "float"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{path}: expected a number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean")
    elif kind == "timestamp":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{path}: expected epoch seconds")
    else:
        problems.append(f"{path}: model type {kind} not checked")


check(body, shape, "$")
print(json.dumps(problems))
