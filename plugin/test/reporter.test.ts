import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Reporter } from "../src/reporter.js";
import { type FakeApi, closedPort, recordingLogger, startFakeApi } from "./helpers.js";

const KEY = "sk-ant-reporter-test-secret";

describe("Reporter", () => {
  let api: FakeApi;
  before(async () => {
    api = await startFakeApi(() => ({ status: 200, body: { ok: true } }));
  });
  after(async () => {
    await api.close();
  });

  test("posts JSON with the credential header and returns the parsed answer", async () => {
    const logs = recordingLogger();
    const reporter = new Reporter({ apiUrl: api.url, timeoutMs: 1500, headers: { "x-api-key": KEY }, logger: logs.logger });
    api.respond = () => ({ status: 200, body: { session_id: "s" } });
    const result = await reporter.post("/v1/sessions", { a: 1 });
    assert.deepEqual(result, { ok: true, status: 200, body: { session_id: "s" } });
    const request = api.requests.at(-1);
    assert.equal(request?.method, "POST");
    assert.equal(request?.path, "/v1/sessions");
    assert.equal(request?.headers["x-api-key"], KEY);
    assert.equal(request?.headers["content-type"], "application/json");
    assert.deepEqual(request?.body, { a: 1 });
    assert.deepEqual(logs.lines, []);
  });

  test("an unreachable API is logged once, not per report, and never throws", async () => {
    const logs = recordingLogger();
    const port = await closedPort();
    const reporter = new Reporter({
      apiUrl: `http://127.0.0.1:${port}`, timeoutMs: 500, headers: { "x-api-key": KEY }, logger: logs.logger, retryAfterMs: 0,
    });
    for (let i = 0; i < 5; i += 1) {
      assert.deepEqual(await reporter.post("/v1/sessions", { i }), { ok: false, reason: "unreachable" });
    }
    assert.equal(logs.at("warn").length, 1);
    assert.match(logs.at("warn")[0] ?? "", /smoltbot API unreachable at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    assert.ok(reporter.unreachable);
  });

  test("while down, reports are dropped without a network call until retryAfterMs passes", async () => {
    const logs = recordingLogger();
    let clock = 1_000;
    api.respond = () => "hang";
    const reporter = new Reporter({
      apiUrl: api.url, timeoutMs: 200, headers: {}, logger: logs.logger, retryAfterMs: 5000, now: () => clock,
    });
    const before = api.requests.length;
    assert.deepEqual(await reporter.post("/v1/sessions", {}), { ok: false, reason: "unreachable" });
    assert.deepEqual(await reporter.post("/v1/sessions", {}), { ok: false, reason: "skipped" });
    assert.equal(api.requests.length, before + 1);

    clock += 5000;
    api.respond = () => ({ status: 200, body: {} });
    assert.equal((await reporter.post("/v1/sessions", {})).ok, true);
    assert.equal(api.requests.length, before + 2);
    assert.deepEqual(logs.lines.map((line) => line.level), ["warn", "info"]);
  });

  test("recovery is logged once, and a new outage is logged again", async () => {
    const logs = recordingLogger();
    api.respond = () => "hang";
    const reporter = new Reporter({ apiUrl: api.url, timeoutMs: 200, headers: {}, logger: logs.logger, retryAfterMs: 0 });
    await reporter.post("/x", {});
    await reporter.post("/x", {});
    api.respond = () => ({ status: 200, body: {} });
    await reporter.post("/x", {});
    await reporter.post("/x", {});
    api.respond = () => "hang";
    await reporter.post("/x", {});
    assert.deepEqual(logs.lines.map((line) => line.level), ["warn", "info", "warn"]);
    assert.match(logs.at("info")[0] ?? "", /smoltbot API reachable again at /);
  });

  test("a 5xx is logged once per endpoint and does not hold back the others", async () => {
    const logs = recordingLogger();
    api.respond = (request) =>
      request.path === "/v1/tool-executions"
        ? { status: 503, body: { error: { code: 503, message: "the observer service is unavailable; try again shortly" } } }
        : { status: 200, body: {} };
    const reporter = new Reporter({ apiUrl: api.url, timeoutMs: 1500, headers: {}, logger: logs.logger });
    for (let i = 0; i < 3; i += 1) {
      assert.deepEqual(await reporter.post("/v1/tool-executions", {}), { ok: false, reason: "unavailable", status: 503 });
      assert.equal((await reporter.post("/v1/sessions", {})).ok, true);
    }
    api.respond = () => ({ status: 200, body: {} });
    assert.equal((await reporter.post("/v1/tool-executions", {})).ok, true);
    assert.deepEqual(logs.lines, [
      { level: "warn", message: "smoltbot API could not take POST /v1/tool-executions: HTTP 503: the observer service is unavailable; try again shortly; those reports are dropped until it can" },
      { level: "info", message: "smoltbot API takes POST /v1/tool-executions again" },
    ]);
  });

  test("a request that gets no answer in time counts as unreachable", async () => {
    const logs = recordingLogger();
    api.respond = () => "hang";
    const reporter = new Reporter({ apiUrl: api.url, timeoutMs: 200, headers: {}, logger: logs.logger });
    const started = Date.now();
    assert.deepEqual(await reporter.post("/v1/sessions", {}), { ok: false, reason: "unreachable" });
    assert.ok(Date.now() - started < 1500, "the timeout bounds the call");
    assert.match(logs.at("warn")[0] ?? "", /no answer within 200 ms/);
  });

  test("a 4xx is logged once per endpoint and status, with the API's message", async () => {
    const logs = recordingLogger();
    api.respond = () => ({ status: 403, body: { error: { code: 403, status: "PERMISSION_DENIED", message: "the credential is not smolt-1's" } } });
    const reporter = new Reporter({ apiUrl: api.url, timeoutMs: 1500, headers: { "x-api-key": KEY }, logger: logs.logger });
    for (let i = 0; i < 3; i += 1) {
      assert.deepEqual(await reporter.post("/v1/sessions", {}), { ok: false, reason: "rejected", status: 403 });
    }
    await reporter.post("/v1/tool-executions", {});
    assert.deepEqual(logs.at("warn"), [
      "smoltbot API rejected POST /v1/sessions: HTTP 403: the credential is not smolt-1's (logged once)",
      "smoltbot API rejected POST /v1/tool-executions: HTTP 403: the credential is not smolt-1's (logged once)",
    ]);
    assert.equal(reporter.unreachable, false);
  });

  test("a logger that throws does not make post throw", async () => {
    const port = await closedPort();
    const throwing = () => {
      throw new Error("logger broke");
    };
    const reporter = new Reporter({
      apiUrl: `http://127.0.0.1:${port}`, timeoutMs: 500, headers: {},
      logger: { info: throwing, warn: throwing, error: throwing },
    });
    assert.deepEqual(await reporter.post("/v1/sessions", {}), { ok: false, reason: "unreachable" });
  });

  test("no log line ever contains the credential", async () => {
    const logs = recordingLogger();
    const port = await closedPort();
    const down = new Reporter({ apiUrl: `http://127.0.0.1:${port}`, timeoutMs: 500, headers: { "x-api-key": KEY }, logger: logs.logger });
    await down.post("/v1/sessions", {});
    api.respond = () => ({ status: 401, body: { error: { code: 401, message: "needs the agent's credential" } } });
    const rejected = new Reporter({ apiUrl: api.url, timeoutMs: 1500, headers: { authorization: `Bearer ${KEY}` }, logger: logs.logger });
    await rejected.post("/v1/sessions", {});
    assert.equal(logs.lines.length, 2);
    for (const line of logs.lines) assert.ok(!line.message.includes(KEY), line.message);
  });
});
