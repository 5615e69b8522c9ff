// One Node SDK, unchanged from npm, sends the six calls of tests/cdp/test_sdk_compat_node.py.
//
//   node send_calls.mjs '{"sdk": "...", "host": "http://127.0.0.1:PORT", "writeKey": "tk_...", "prefix": "x"}'
//
// Each SDK is configured only with the API's URL as its host and a project's key as its write
// key, as a customer would; it batches, retries (once) and, for rudder, gzips as it does by
// default. Prints one JSON line: the message ids it sent per call, and the errors it reported
// (exit status 1 if any). A hard timeout bounds the whole run.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const config = JSON.parse(process.argv[2]);
const { sdk, host, writeKey, prefix } = config;
const FLUSH_TIMEOUT_MS = 20_000;

const user = `user_${prefix}`;
const calls = {
  identify: {
    userId: user,
    anonymousId: `anon-${prefix}`,
    traits: { email: "Ada@Example.com", name: "Ada Lovelace", plan: "pro", age: 36, vip: true },
  },
  track: {
    userId: user,
    event: "Order Completed",
    properties: { amount: 12.5, currency: "EUR", items: [{ sku: "A-1", quantity: 2 }] },
    timestamp: new Date("2025-01-02T03:04:05Z"),
  },
  page: { userId: user, name: "Pricing", properties: { path: "/pricing", title: "Pricing" } },
  screen: { userId: user, name: "Home", properties: { tab: "feed" } },
  group: { userId: user, groupId: "acme", traits: { name: "Acme", employees: 12 } },
  alias: { userId: user, previousId: `legacy_${prefix}` },
};
const messageIds = {};
for (const kind of Object.keys(calls)) {
  messageIds[kind] = `${prefix}-${kind}-${Date.now()}`;
  calls[kind].messageId = messageIds[kind];
}
const errors = [];

const watchdog = setTimeout(() => {
  errors.push(`no flush within ${FLUSH_TIMEOUT_MS} ms`);
  finish();
}, FLUSH_TIMEOUT_MS + 5_000);

function finish() {
  clearTimeout(watchdog);
  process.stdout.write(JSON.stringify({ sdk, messageIds, errors }) + "\n");
  process.exit(errors.length ? 1 : 0);
}

function segmentStyle(Analytics) {
  const analytics = new Analytics({ writeKey, host, maxRetries: 1, flushInterval: 100, httpRequestTimeout: 10_000 });
  analytics.on("error", (error) => errors.push(String(error?.reason ?? error?.message ?? error)));
  for (const [kind, call] of Object.entries(calls)) {
    analytics[kind](call, (error) => error && errors.push(`${kind}: ${error}`));
  }
  return analytics.closeAndFlush({ timeout: FLUSH_TIMEOUT_MS });
}

function rudder(Analytics) {
  const client = new Analytics(writeKey, {
    dataPlaneUrl: host,
    flushInterval: 100,
    retryCount: 1,
    timeout: 10_000,
    logLevel: "error",
    errorHandler: (error) => errors.push(String(error?.response?.status ?? error)),
  });
  for (const [kind, call] of Object.entries(calls)) {
    client[kind](call);
  }
  return client.flush();
}

const senders = {
  "@segment/analytics-node": () => segmentStyle(require("@segment/analytics-node").Analytics),
  "@customerio/cdp-analytics-node": () => segmentStyle(require("@customerio/cdp-analytics-node").Analytics),
  "@rudderstack/rudder-sdk-node": () => rudder(require("@rudderstack/rudder-sdk-node")),
};

try {
  await senders[sdk]();
} catch (error) {
  errors.push(String(error?.message ?? error));
}
finish();
