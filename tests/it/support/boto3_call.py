"""Prints boto3's answer to one IoT operation as JSON: the reference AWS
client's view, for comparing with what the gateway answers.

Usage: boto3_call.py ENDPOINT_URL REGION OPERATION PARAMS_JSON
OPERATION is boto3's method name (describe_job_execution); PARAMS_JSON its
keyword arguments. Timestamps are written as RFC 3339 with milliseconds, as
proto3 JSON does.
"""
import datetime
import json
import sys

import boto3

endpoint, region, operation, params = sys.argv[1:5]
client = boto3.client(
    "iot",
    endpoint_url=endpoint,
    region_name=region,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
answer = getattr(client, operation)(**json.loads(params))
answer.pop("ResponseMetadata", None)


def timestamp(value):
    if isinstance(value, datetime.datetime):
        utc = value.astimezone(datetime.timezone.utc)
        text = utc.strftime("%Y-%m-%dT%H:%M:%S")
        millis = utc.microsecond // 1000
        return f"{text}.{millis:03d}Z" if millis else f"{text}Z"
    raise TypeError(f"cannot encode {type(value)}")


print(json.dumps(answer, default=timestamp))
