// An example client of iot-jobs-gateway: describes jobs one call at a time,
// in one batch or in one stream of answers, and watches them until they
// finish, reconnecting with `resume_from` when the gateway goes away. Each
// fact is one line of `key=value` tokens on stdout. It speaks plaintext, or
// TLS with --ca-bundle. With IOT_JOBS_GATEWAY_TOKEN set, every call carries
// it as a bearer token. Build it first (`npm ci && npm run build`, see
// examples/README.md), then:
//
//   node dist/client.js [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] describe JOB_ID...
//   node dist/client.js [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] batch JOB_ID...
//   node dist/client.js [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] stream JOB_ID...
//   node dist/client.js [--target HOST:PORT] [--ca-bundle FILE] watch JOB_ID...

import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { getProtoPath } from 'google-proto-files';

import type { ProtoGrpcType as ErrorDetailsProto } from './generated/error_details';
import type { ProtoGrpcType as GatewayProto } from './generated/gateway';
import type { Status__Output } from './generated/google/rpc/Status';
import type { BatchDescribeJobsResponse__Output } from './generated/iot/jobs/v1/BatchDescribeJobsResponse';
import type { DescribeJobResponse__Output } from './generated/iot/jobs/v1/DescribeJobResponse';
import type { Job__Output } from './generated/iot/jobs/v1/Job';
import type { JobResult__Output } from './generated/iot/jobs/v1/JobResult';
import type { JobsGatewayClient } from './generated/iot/jobs/v1/JobsGateway';
import type { StreamDescribeJobsResponse__Output } from './generated/iot/jobs/v1/StreamDescribeJobsResponse';
import type { StreamJobExecutionsForJobResponse__Output } from './generated/iot/jobs/v1/StreamJobExecutionsForJobResponse';
import type { WatchJobsResponse__Output } from './generated/iot/jobs/v1/WatchJobsResponse';

const USAGE = `usage: client [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] describe JOB_ID...
       client [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] batch JOB_ID...
       client [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] stream JOB_ID...
       client [--target HOST:PORT] [--ca-bundle FILE] watch JOB_ID...
       client [--target HOST:PORT] [--ca-bundle FILE] [--deadline SECONDS] failed-devices JOB_ID...`;

const COMMANDS = ['describe', 'batch', 'stream', 'watch', 'failed-devices'] as const;

interface Options {
  target: string;
  /** TLS: a PEM file of the CAs to trust. Plaintext without it. */
  caBundle?: string;
  /** Seconds each describe, batch or stream call may take. */
  deadline: number;
  command: (typeof COMMANDS)[number];
  jobIds: string[];
}

type Contract = GatewayProto & ErrorDetailsProto;
type Rpc = Contract['google']['rpc'];

/** A describe is tried at most this often while the gateway says RATE_LIMITED. */
const MAX_ATTEMPTS = 5;
/** A watch gives up after this long without a message from the gateway. */
const GIVE_UP_MS = 60_000;

function parseCommandLine(argv: string[]): Options | 'help' | undefined {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        target: { type: 'string', default: '127.0.0.1:50051' },
        deadline: { type: 'string', default: '5' },
        'ca-bundle': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
    if (values.help) return 'help';
    const [command, ...jobIds] = positionals;
    const deadline = Number(values.deadline);
    const known = COMMANDS.find((name) => name === command);
    if (!known || jobIds.length === 0 || !Number.isFinite(deadline) || deadline <= 0) {
      return undefined;
    }
    return { target: values.target, caBundle: values['ca-bundle'], deadline, command: known, jobIds };
  } catch {
    return undefined; // parseArgs: an unknown option, or one without its value
  }
}

/**
 * Loads the gateway's contract at run time: `proto/` of the repository (or
 * GATEWAY_PROTO_DIR), and google/rpc/error_details.proto (ErrorInfo,
 * RetryInfo) from the google-proto-files package. The options are those
 * `npm run generate` gives proto-loader-gen-types, so the generated types
 * describe exactly the objects this returns.
 */
function loadContract(): Contract {
  const protoDir = process.env.GATEWAY_PROTO_DIR ?? path.join(__dirname, '..', '..', '..', 'proto');
  const definition = protoLoader.loadSync(['iot/jobs/v1/gateway.proto', 'google/rpc/error_details.proto'], {
    includeDirs: [protoDir, path.dirname(getProtoPath())],
    longs: String, // uint64 versions as decimal strings: they do not fit a JS number
    enums: String, // enum values by name: IN_PROGRESS, CURRENT, MISS
    defaults: true,
    oneofs: true, // `outcome`, `state`, `event` name the member that is set
  });
  return grpc.loadPackageDefinition(definition) as unknown as Contract;
}

/** Prints one fact: its name, then `key=value` tokens. */
function print(name: string, fields: Record<string, string | number | boolean> = {}): void {
  const tokens = Object.entries(fields).map(([key, value]) => `${key}=${value}`);
  console.log([name, ...tokens].join(' '));
}

function codeName(code: number): string {
  return grpc.status[code] ?? String(code);
}

/**
 * An enum value as printed: its name, or its number for a value this copy of
 * the contract does not know. Proto3 enums are open, so a newer gateway may
 * send values (a JobEvent.Kind, a Trigger, a CacheInfo.Source) added since;
 * protobufjs then hands back the number, although the generated `__Output`
 * types promise one of the known names.
 */
function enumName(value: string | number): string {
  return String(value);
}

function statusName(job: Job__Output | null | undefined): string {
  const status: string | number = job?.status ?? 'STATUS_UNSPECIFIED';
  // An AWS status the gateway itself does not know comes as
  // STATUS_UNSPECIFIED, with AWS's string in `unrecognizedValues`: that is
  // how the gateway passes on such values, so show AWS's string.
  const fromAws = job?.unrecognizedValues?.['status'];
  return status === 'STATUS_UNSPECIFIED' && fromAws !== undefined ? fromAws : enumName(status);
}

/**
 * The google.rpc.Status behind a failed call. The gateway sends it whole,
 * details included, in the binary trailer `grpc-status-details-bin` (gRPC's
 * richer error model); the call's own code and message are its summary.
 */
function richStatus(rpc: Rpc, error: grpc.ServiceError): Status__Output | undefined {
  const [bytes] = error.metadata.get('grpc-status-details-bin');
  return bytes instanceof Buffer ? rpc.Status.deserialize(bytes) : undefined;
}

/** The ErrorInfo reason (`-` without one) and the RetryInfo delay in a status's details. */
function errorDetails(rpc: Rpc, status: Status__Output | null | undefined) {
  let reason = '-';
  let retryDelayMs: number | undefined;
  // Each detail is a google.protobuf.Any: a type URL and the message's bytes.
  for (const detail of status?.details ?? []) {
    // The message's full name is what follows the type URL's last '/' (as
    // protobufjs reads it): the host part before it may be anything.
    const typeName = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
    if (typeName === 'google.rpc.ErrorInfo') {
      reason = rpc.ErrorInfo.deserialize(detail.value).reason || '-';
    } else if (typeName === 'google.rpc.RetryInfo') {
      const delay = rpc.RetryInfo.deserialize(detail.value).retryDelay;
      if (delay) retryDelayMs = Math.round(Number(delay.seconds) * 1000 + delay.nanos / 1e6);
    }
  }
  return { reason, retryDelayMs };
}

/** The `code= reason= message=` tokens of a failed call. */
function failure(rpc: Rpc, error: grpc.ServiceError) {
  return {
    code: codeName(error.code),
    reason: errorDetails(rpc, richStatus(rpc, error)).reason,
    message: error.details.replaceAll(' ', '_') || '-',
  };
}

function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && 'code' in error && 'metadata' in error && error.metadata instanceof grpc.Metadata;
}

type Outcome<T> = { ok: true; value: T; headers: grpc.Metadata } | { ok: false; error: grpc.ServiceError };

/**
 * Runs a unary call and keeps its response headers (`x-cache`) with its
 * answer: they arrive first, as the call's `metadata` event.
 */
function unary<T>(start: (done: grpc.requestCallback<T>) => grpc.ClientUnaryCall): Promise<Outcome<T>> {
  return new Promise((resolve) => {
    let headers = new grpc.Metadata();
    const call = start((error, value) => {
      resolve(error ? { ok: false, error } : { ok: true, value: value!, headers });
    });
    call.on('metadata', (received) => {
      headers = received;
    });
  });
}

/**
 * A deadline `seconds` from now, for one call (a retry gets a fresh one). It
 * travels as the `grpc-timeout` header: the gateway gives up on the call,
 * and calls AWS no more for it, once it has passed.
 */
function deadlineIn(seconds: number): number {
  return Date.now() + seconds * 1000;
}

async function describe(
  client: JobsGatewayClient,
  rpc: Rpc,
  options: Options,
  metadata: grpc.Metadata,
): Promise<number> {
  let exitCode = 0;
  for (const jobId of options.jobIds) {
    for (let attempt = 1; ; attempt++) {
      const outcome = await unary<DescribeJobResponse__Output>((done) =>
        client.describeJob({ jobId }, metadata, { deadline: deadlineIn(options.deadline) }, done),
      );
      if (outcome.ok) {
        const job = outcome.value.job;
        print('job', {
          id: jobId,
          status: statusName(job),
          cache: outcome.headers.get('x-cache')[0]?.toString() ?? '-',
          succeeded: job?.jobProcessDetails?.numberOfSucceededThings ?? 0,
        });
        break;
      }
      const { error } = outcome;
      const { reason, retryDelayMs } = errorDetails(rpc, richStatus(rpc, error));
      if (error.code === grpc.status.NOT_FOUND) {
        print('not-found', { id: jobId, reason });
      } else if (
        // The gateway's own rate limit had no AWS call free before the
        // deadline (AWS was not called); RetryInfo says when one will be.
        error.code === grpc.status.RESOURCE_EXHAUSTED &&
        reason === 'RATE_LIMITED' &&
        retryDelayMs !== undefined &&
        attempt < MAX_ATTEMPTS
      ) {
        print('rate-limited', { id: jobId, 'retry-in-ms': retryDelayMs });
        await sleep(retryDelayMs);
        continue;
      } else {
        print('failed', { id: jobId, ...failure(rpc, error) });
      }
      exitCode = 1;
      break;
    }
  }
  return exitCode;
}

/**
 * Prints one item of a batch (a JobResult) or of a stream (a
 * StreamDescribeJobsResponse, with the same fields). A failed item does not
 * fail the call: its `error` is a google.rpc.Status of its own, with the same
 * details DescribeJob would have sent.
 */
function printItem(rpc: Rpc, result: JobResult__Output | StreamDescribeJobsResponse__Output): void {
  const item = { index: result.index ?? 0, id: result.jobId };
  if (result.outcome === 'error') {
    print('item', {
      ...item,
      code: codeName(result.error?.code ?? grpc.status.UNKNOWN),
      reason: errorDetails(rpc, result.error).reason,
    });
  } else {
    print('item', {
      ...item,
      status: statusName(result.response?.job),
      cache: enumName(result.cache?.source ?? 'SOURCE_UNSPECIFIED'),
    });
  }
}

async function batch(client: JobsGatewayClient, rpc: Rpc, options: Options, metadata: grpc.Metadata): Promise<number> {
  const outcome = await unary<BatchDescribeJobsResponse__Output>((done) =>
    client.batchDescribeJobs(
      { requests: options.jobIds.map((jobId) => ({ jobId })) },
      metadata,
      { deadline: deadlineIn(options.deadline) },
      done,
    ),
  );
  if (!outcome.ok) {
    print('failed', failure(rpc, outcome.error));
    return 1;
  }
  for (const result of outcome.value.results) printItem(rpc, result);
  return 0;
}

async function stream(client: JobsGatewayClient, rpc: Rpc, options: Options, metadata: grpc.Metadata): Promise<number> {
  // Each result comes as soon as the gateway has it, in the order the
  // answers are ready: its `index` says which request it answers. The
  // deadline is the whole stream's, not each message's.
  const results = client.streamDescribeJobs(
    { requests: options.jobIds.map((jobId) => ({ jobId })) },
    metadata,
    { deadline: deadlineIn(options.deadline) },
  );
  try {
    // As in watch: the loop ends when the stream ends with OK and throws the
    // ServiceError when it fails.
    for await (const result of results as AsyncIterable<StreamDescribeJobsResponse__Output>) {
      printItem(rpc, result);
    }
  } catch (error) {
    if (!isServiceError(error)) throw error;
    print('failed', failure(rpc, error));
    return 1;
  }
  return 0;
}

async function failedDevices(
  client: JobsGatewayClient,
  rpc: Rpc,
  options: Options,
  metadata: grpc.Metadata,
): Promise<number> {
  // Which devices failed each job: its whole listing of FAILED executions in
  // one streamJobExecutionsForJob (the gateway pages through AWS, 250 at a
  // time within its budget, and shares the pages with anyone listing the
  // same at once). One `device` line per device, then a `devices` count.
  let code = 0;
  for (const jobId of options.jobIds) {
    const pages = client.streamJobExecutionsForJob({ jobId, status: 'FAILED' }, metadata, {
      deadline: deadlineIn(options.deadline),
    });
    let count = 0;
    let seen = 0;
    try {
      for await (const page of pages as AsyncIterable<StreamJobExecutionsForJobResponse__Output>) {
        seen += 1;
        for (const item of page.executionSummaries) {
          // AWS names the device by its ARN: the thing's name ends it.
          const thing = (item.thingArn ?? '').split('/').pop();
          print('device', { job: jobId, thing: thing ?? '', status: 'FAILED' });
          count += 1;
        }
      }
    } catch (error) {
      if (!isServiceError(error)) throw error;
      print('failed', { id: jobId, ...failure(rpc, error) });
      code = 1;
      continue;
    }
    print('devices', { job: jobId, failed: count, pages: seen });
  }
  return code;
}

async function watch(client: JobsGatewayClient, rpc: Rpc, options: Options, metadata: grpc.Metadata): Promise<number> {
  const jobIds = [...new Set(options.jobIds)];
  const versions = new Map<string, string>(); // the last version seen per job
  const finished = new Set<string>(); // jobs whose final event came
  // Where to resume: each job still watched that was seen, with its last
  // version, by id. The gateway sends no first event for a job whose state
  // still has that version.
  const resumePoint = () =>
    [...versions].filter(([id]) => !finished.has(id)).sort(([a], [b]) => (a < b ? -1 : 1));
  let lastProgress = Date.now();
  let backoffMs = 200;

  for (;;) {
    const watching = jobIds.filter((id) => !finished.has(id));
    if (watching.length === 0) break; // the stream broke after the last final event
    // No deadline: the stream stays open until every job is final.
    const stream = client.watchJobs({ jobIds: watching, resumeFrom: Object.fromEntries(resumePoint()) }, metadata);
    try {
      // The loop ends when the stream ends with OK and throws the
      // ServiceError when it fails. (grpc-js streams are Node readables,
      // whose iterator is typed `any`: hence the cast.)
      for await (const message of stream as AsyncIterable<WatchJobsResponse__Output>) {
        lastProgress = Date.now();
        backoffMs = 200;
        if (message.job) {
          const event = message.job;
          versions.set(event.jobId, event.version);
          if (event.final) finished.add(event.jobId);
          print('event', {
            id: event.jobId,
            version: event.version,
            kind: enumName(event.kind),
            status: event.response ? statusName(event.response.job) : '-',
            final: event.final,
            trigger: enumName(event.trigger),
          });
        } else if (message.heartbeat) {
          print('heartbeat', { watching: message.heartbeat.watching });
        }
      }
      break; // ended with OK: every job is final
    } catch (error) {
      if (!isServiceError(error)) throw error;
      const { code, reason, message } = failure(rpc, error);
      if (error.code !== grpc.status.UNAVAILABLE) {
        print('failed', { code, reason, message });
        return 1;
      }
      // UNAVAILABLE: the gateway is shutting down (SHUTTING_DOWN) or cannot
      // be reached. Reconnect, to it or to another replica behind the target.
      const resume = resumePoint().map(([id, version]) => `${id}:${version}`).join(',') || '-';
      if (Date.now() - lastProgress >= GIVE_UP_MS) {
        print('gave-up', { code, reason, resume });
        return 1;
      }
      print('reconnect', { code, reason, resume });
      await sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, 2000);
    }
  }
  print('done');
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const options = parseCommandLine(argv);
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }
  if (!options) {
    console.error(USAGE);
    return 2;
  }
  let ca: Buffer | undefined;
  try {
    ca = options.caBundle === undefined ? undefined : readFileSync(options.caBundle);
  } catch (error) {
    console.error(`${USAGE}\nclient: --ca-bundle: ${(error as Error).message}`);
    return 2;
  }
  const contract = loadContract();
  // The caller's token, from the environment only (out of shell history and process lists).
  const token = process.env.IOT_JOBS_GATEWAY_TOKEN?.trim();
  const metadata = new grpc.Metadata(); // sent with each call: empty with TLS
  let credentials: grpc.ChannelCredentials;
  if (ca) {
    // TLS to the target, trusting only the given CAs. The certificate must
    // name the target's host: an IP address (127.0.0.1) needs an IP SAN.
    credentials = grpc.credentials.createSsl(ca);
    if (token) {
      // Call credentials: the channel adds `authorization: Bearer <token>`
      // to every call made on it.
      const bearer = grpc.credentials.createFromMetadataGenerator((_params, callback) => {
        const headers = new grpc.Metadata();
        headers.set('authorization', `Bearer ${token}`);
        callback(null, headers);
      });
      credentials = grpc.credentials.combineChannelCredentials(credentials, bearer);
    }
  } else {
    credentials = grpc.credentials.createInsecure();
    // Metadata on each call: grpc-js refuses call credentials on an insecure channel.
    if (token) metadata.set('authorization', `Bearer ${token}`);
  }
  const client = new contract.iot.jobs.v1.JobsGateway(options.target, credentials, {
    // A gateway that vanishes without closing the connection (a host gone, a
    // network cut) would leave a watch waiting forever. With an HTTP/2 PING
    // every 20 s, to be answered within 10 s, it is noticed within ~30 s: the
    // stream fails with UNAVAILABLE and the watch reconnects.
    'grpc.keepalive_time_ms': 20_000,
    'grpc.keepalive_timeout_ms': 10_000,
    // grpc-js waits between connection attempts on its own, from 1 s up to
    // 2 min, and fails calls at once meanwhile. Keep its pace to the watch's
    // backoff so that a restarted gateway is found again within 2 s.
    'grpc.initial_reconnect_backoff_ms': 200,
    'grpc.max_reconnect_backoff_ms': 2000,
  });
  const rpc = contract.google.rpc;
  try {
    switch (options.command) {
      case 'describe':
        return await describe(client, rpc, options, metadata);
      case 'batch':
        return await batch(client, rpc, options, metadata);
      case 'stream':
        return await stream(client, rpc, options, metadata);
      case 'watch':
        return await watch(client, rpc, options, metadata);
      case 'failed-devices':
        return await failedDevices(client, rpc, options, metadata);
    }
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
