#!/usr/bin/env python3
"""An example client of iot-jobs-gateway: describes, batch-describes,
stream-describes and watches AWS IoT jobs over gRPC.

    jobs_client.py --target HOST:PORT [--ca-bundle FILE] [--deadline SECONDS] describe JOB_ID...
    jobs_client.py --target HOST:PORT [--ca-bundle FILE] [--deadline SECONDS] batch JOB_ID...
    jobs_client.py --target HOST:PORT [--ca-bundle FILE] [--deadline SECONDS] stream JOB_ID...
    jobs_client.py --target HOST:PORT [--ca-bundle FILE] watch JOB_ID...
    jobs_client.py --target HOST:PORT [--ca-bundle FILE] [--deadline SECONDS] failed-devices JOB_ID...

It prints one `key=value` line per fact on stdout. It speaks plaintext, or TLS
with --ca-bundle. With IOT_JOBS_GATEWAY_TOKEN set, every call carries it as a
bearer token. The stubs come from
proto/iot/jobs/v1/gateway.proto (see examples/README.md); google.rpc's
Status, ErrorInfo and RetryInfo come from googleapis-common-protos.
"""

import argparse
import math
import os
import sys
import time

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from iot.jobs.v1 import gateway_pb2, gateway_pb2_grpc

Job = gateway_pb2.Job
JobEvent = gateway_pb2.JobEvent
CacheInfo = gateway_pb2.CacheInfo

# Code names by number, for the codes inside a batch item's google.rpc.Status.
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

MAX_ATTEMPTS = 5  # describe: attempts per job while the gateway rate-limits
GIVE_UP_AFTER = 60.0  # watch: seconds without a message before giving up
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 2.0  # watch: reconnect delays


def error_details(details):
    """The ErrorInfo and RetryInfo among a google.rpc.Status's `details`
    (each a protobuf Any), or None for those that are absent."""
    info = retry = None
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
    return info, retry


def call_error_details(error):
    """The ErrorInfo and RetryInfo of a failed call. The gateway sends them in
    a google.rpc.Status, binary, in the `grpc-status-details-bin` trailer;
    from_call decodes it (None when there is none, as for a connection the
    client itself could not open)."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        # The trailer's code or message differ from the call's own (say, a
        # proxy rewrote grpc-message): from_call refuses it. No details then.
        status = None
    return error_details(status.details if status else [])


def enum_name(enum, number):
    """An enum value's name, or its number as text: proto3 enums are open, and
    a newer gateway may send values (a JobEvent.Kind, a Trigger, a
    CacheInfo.Source) added after these stubs were generated."""
    try:
        return enum.Name(number)
    except ValueError:  # no name in this copy of the contract
        return str(number)


def status_name(job):
    """A job's status. An AWS status the gateway itself does not know comes as
    STATUS_UNSPECIFIED, with AWS's string in `unrecognized_values`: that is
    how the gateway passes on such values, so show AWS's string."""
    if job.status == Job.STATUS_UNSPECIFIED and "status" in job.unrecognized_values:
        return job.unrecognized_values["status"]
    return enum_name(Job.Status, job.status)


def reason_of(info):
    return info.reason if info and info.reason else "-"


def words(message):
    """A status message as one token."""
    return message.replace(" ", "_") if message else "-"


def failure(error, info):
    return f"code={error.code().name} reason={reason_of(info)} message={words(error.details())}"


def describe(stub, job_id, deadline, metadata):
    """One DescribeJob, retried while the gateway's own rate limit says when
    to come back. True when the job was found."""
    request = gateway_pb2.DescribeJobRequest(job_id=job_id)
    attempt = 0
    while True:
        attempt += 1
        try:
            # `timeout` becomes the call's deadline (the grpc-timeout header):
            # the gateway gives up, and does not call AWS, once it has passed.
            # with_call also returns the call, for its response headers.
            response, call = stub.DescribeJob.with_call(
                request, timeout=deadline, metadata=metadata
            )
        except grpc.RpcError as error:
            info, retry = call_error_details(error)
            code = error.code()
            if code == grpc.StatusCode.NOT_FOUND:
                print(f"not-found id={job_id} reason={reason_of(info)}")
                return False
            rate_limited = (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and reason_of(info) == "RATE_LIMITED"
            )
            if rate_limited and retry and attempt < MAX_ATTEMPTS:
                # AWS was not called: come back when the gateway says a call
                # can get through, with a fresh deadline.
                delay = retry.retry_delay.ToTimedelta().total_seconds()
                print(f"rate-limited id={job_id} retry-in-ms={round(delay * 1000)}")
                time.sleep(delay)
                continue
            print(f"failed id={job_id} {failure(error, info)}")
            return False
        headers = dict(call.initial_metadata())
        job = response.job
        print(
            f"job id={job_id} status={status_name(job)}"
            f" cache={headers.get('x-cache', '-')}"
            f" succeeded={job.job_process_details.number_of_succeeded_things}"
        )
        return True


def print_item(result):
    """One item of a batch (a JobResult) or of a stream (a
    StreamDescribeJobsResponse, with the same fields): each succeeds or fails
    alone."""
    head = f"item index={result.index} id={result.job_id}"
    if result.WhichOneof("outcome") == "response":
        status = status_name(result.response.job)
        source = enum_name(CacheInfo.Source, result.cache.source)
        print(f"{head} status={status} cache={source}")
    else:
        # A failed item carries the google.rpc.Status DescribeJob would have
        # failed with, details included, as a plain message field.
        info, _ = error_details(result.error.details)
        code = CODE_NAMES.get(result.error.code, str(result.error.code))
        print(f"{head} code={code} reason={reason_of(info)}")


def describe_requests(job_ids):
    return [gateway_pb2.DescribeJobRequest(job_id=job_id) for job_id in job_ids]


def batch(stub, job_ids, deadline, metadata):
    """One BatchDescribeJobs for every id: all results in one answer."""
    request = gateway_pb2.BatchDescribeJobsRequest(requests=describe_requests(job_ids))
    try:
        response = stub.BatchDescribeJobs(request, timeout=deadline, metadata=metadata)
    except grpc.RpcError as error:
        info, _ = call_error_details(error)
        print(f"failed {failure(error, info)}")
        return False
    for result in response.results:
        print_item(result)
    return True


def stream(stub, job_ids, deadline, metadata):
    """One StreamDescribeJobs for every id: each result is printed as soon as
    the gateway sends it, in the order the answers are ready (its `index`
    says which request it answers). True when the stream ended OK."""
    request = gateway_pb2.StreamDescribeJobsRequest(requests=describe_requests(job_ids))
    try:
        # The timeout is the deadline of the whole stream, not of each message.
        for result in stub.StreamDescribeJobs(request, timeout=deadline, metadata=metadata):
            print_item(result)
    except grpc.RpcError as error:
        info, _ = call_error_details(error)
        print(f"failed {failure(error, info)}")
        return False
    return True


def failed_devices(stub, job_ids, deadline, metadata):
    """Which devices failed each job: its whole listing of FAILED executions
    in one StreamJobExecutionsForJob (the gateway pages through AWS, 250 at
    a time within its budget, and shares the pages with anyone listing the
    same at once). One `device` line per device, then a `devices` count.
    True when every listing ended OK."""
    failed = gateway_pb2.JobExecution.FAILED
    ok = True
    for job_id in job_ids:
        request = gateway_pb2.StreamJobExecutionsForJobRequest(job_id=job_id, status=failed)
        count = pages = 0
        try:
            for page in stub.StreamJobExecutionsForJob(
                request, timeout=deadline, metadata=metadata
            ):
                pages += 1
                for item in page.execution_summaries:
                    # AWS names the device by its ARN: the thing's name ends it.
                    thing = item.thing_arn.rsplit("/", 1)[-1]
                    print(f"device job={job_id} thing={thing} status=FAILED")
                    count += 1
        except grpc.RpcError as error:
            info, _ = call_error_details(error)
            print(f"failed id={job_id} {failure(error, info)}")
            ok = False
            continue
        print(f"devices job={job_id} failed={count} pages={pages}")
    return ok


def watch(stub, job_ids, metadata):
    """WatchJobs until every job is final, reconnecting with `resume_from`
    when the stream breaks with UNAVAILABLE. True when the stream ended OK."""
    job_ids = list(dict.fromkeys(job_ids))
    versions = {}  # job id -> version of the last event seen
    final = set()
    backoff = FIRST_BACKOFF
    last_message = time.monotonic()
    while True:
        pending = [job_id for job_id in job_ids if job_id not in final]
        request = gateway_pb2.WatchJobsRequest(
            job_ids=pending,
            # A job whose state still has this version sends no first event.
            resume_from={job_id: versions[job_id] for job_id in pending if job_id in versions},
        )
        try:
            # No timeout: the stream stays open as long as the jobs run.
            for message in stub.WatchJobs(request, metadata=metadata):
                last_message = time.monotonic()
                backoff = FIRST_BACKOFF
                if message.WhichOneof("event") == "heartbeat":
                    print(f"heartbeat watching={message.heartbeat.watching}")
                    continue
                event = message.job
                versions[event.job_id] = event.version
                if event.final:
                    final.add(event.job_id)
                status = (
                    status_name(event.response.job)
                    if event.WhichOneof("state") == "response"
                    else "-"
                )
                print(
                    f"event id={event.job_id} version={event.version}"
                    f" kind={enum_name(JobEvent.Kind, event.kind)} status={status}"
                    f" final={str(event.final).lower()}"
                    f" trigger={enum_name(JobEvent.Trigger, event.trigger)}"
                )
            print("done")  # every job is final: the gateway ended the stream with OK
            return True
        except grpc.RpcError as error:
            info, _ = call_error_details(error)
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                print(f"failed {failure(error, info)}")
                return False
            if len(final) == len(job_ids):
                print("done")  # the stream broke after every job's last event
                return True
            resume = ",".join(
                f"{job_id}:{versions[job_id]}" for job_id in sorted(versions) if job_id not in final
            )
            tokens = f"code=UNAVAILABLE reason={reason_of(info)} resume={resume or '-'}"
            if time.monotonic() - last_message >= GIVE_UP_AFTER:
                print(f"gave-up {tokens}")
                return False
            # The gateway shut down (SHUTTING_DOWN) or is not there (yet).
            print(f"reconnect {tokens}")
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


def seconds(text):
    """A --deadline: a positive, finite number of seconds."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text}")
    return value


def pem_file(path):
    """A --ca-bundle: the bytes of a PEM file."""
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}")


def main():
    parser = argparse.ArgumentParser(description="An example client of iot-jobs-gateway.")
    parser.add_argument("--target", default="127.0.0.1:50051", help="gateway HOST:PORT")
    parser.add_argument(
        "--deadline",
        type=seconds,
        default=5.0,
        help="seconds each describe, batch or stream call may take (default 5)",
    )
    parser.add_argument(
        "--ca-bundle",
        type=pem_file,
        metavar="FILE",
        help="speak TLS, trusting the CAs in this PEM file (default: plaintext)",
    )
    parser.add_argument(
        "command", choices=["describe", "batch", "stream", "watch", "failed-devices"]
    )
    parser.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each line as soon as it is known
    # The caller's bearer token, from the environment only (as the gateway's
    # own CLI reads it), so it stays out of shell history and process lists.
    token = os.environ.get("IOT_JOBS_GATEWAY_TOKEN", "").strip()

    options = [
        # A gateway that vanishes without closing the connection (a host
        # gone, a network cut) would leave a watch waiting forever. With an
        # HTTP/2 PING every 20 s, to be answered within 10 s, it is noticed
        # within ~30 s: the stream fails with UNAVAILABLE and the watch
        # reconnects. gRPC core needs the two `http2` options as well: it
        # waits ping_timeout_ms (1 min by default) for a PING's answer, and
        # after two PINGs without the client sending data (a watch sends none
        # after its request) it slows to one a minute, unless this limit is 0.
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.ping_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # The channel's own reconnect backoff (1 s growing to 120 s by
        # default) would keep failing calls fast long after a restarted
        # gateway is back: keep it within the watch's own backoff.
        ("grpc.initial_reconnect_backoff_ms", int(FIRST_BACKOFF * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF * 1000)),
    ]
    metadata = None
    if args.ca_bundle:
        # TLS to the target, trusting only the given CAs. The certificate must
        # name the target's host: an IP address (127.0.0.1) needs an IP SAN.
        credentials = grpc.ssl_channel_credentials(root_certificates=args.ca_bundle)
        if token:
            # Call credentials: the channel adds `authorization: Bearer
            # <token>` to every call made on it.
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token)
            )
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        if token:
            # Metadata on each call: gRPC sends call credentials only over a
            # secure channel (TLS or local), never in plaintext.
            metadata = [("authorization", f"Bearer {token}")]
        channel = grpc.insecure_channel(args.target, options=options)
    with channel:
        stub = gateway_pb2_grpc.JobsGatewayStub(channel)
        if args.command == "describe":
            # Every job is asked about, even after one fails.
            ok = all([describe(stub, job_id, args.deadline, metadata) for job_id in args.job_ids])
        elif args.command == "batch":
            ok = batch(stub, args.job_ids, args.deadline, metadata)
        elif args.command == "stream":
            ok = stream(stub, args.job_ids, args.deadline, metadata)
        elif args.command == "failed-devices":
            ok = failed_devices(stub, args.job_ids, args.deadline, metadata)
        else:
            ok = watch(stub, args.job_ids, metadata)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
