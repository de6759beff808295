// The TypeScript client generated from proto/ (gen/ts, protoc-gen-es v2) calling the real Registry
// and Observer over gRPC with @connectrpc/connect-node. Run by test_typescript_client.py, which
// starts the services, seeds an agent with traces and passes what to expect in the environment.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ObserverService } from "./gen/ts/smoltbot/v1/observer_service_pb.js";
import { RegistryService } from "./gen/ts/smoltbot/v1/registry_service_pb.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

// Every call carries the installation's service credential as metadata, as the Python clients do
// (smoltbot.core.service_auth: the services refuse calls without it).
const credentialHeader = required("SMOLTBOT_TEST_SERVICE_CREDENTIAL_METADATA");
const credential = required("SMOLTBOT_TEST_SERVICE_CREDENTIAL");
const withCredential: Interceptor = (next) => async (request) => {
  request.header.set(credentialHeader, credential);
  return next(request);
};

function transport(address: string, interceptors: Interceptor[] = [withCredential]) {
  return createGrpcTransport({ baseUrl: `http://${address}`, interceptors });
}

const registryAddress = required("SMOLTBOT_TEST_REGISTRY_ADDRESS");
const registry = createClient(RegistryService, transport(registryAddress));
const observer = createClient(ObserverService, transport(required("SMOLTBOT_TEST_OBSERVER_ADDRESS")));

function rejectsWith(code: Code) {
  return (error: unknown) => {
    assert.ok(error instanceof ConnectError, String(error));
    assert.equal(error.code, code, error.message);
    return true;
  };
}

test("ResolveAgent returns the agent the credential hash already has", async () => {
  const response = await registry.resolveAgent({ agentHash: required("SMOLTBOT_TEST_AGENT_HASH") });
  assert.equal(response.created, false);
  assert.equal(response.agent?.agentId, required("SMOLTBOT_TEST_AGENT_ID"));
});

test("ResolveAgent refuses a malformed hash as INVALID_ARGUMENT", async () => {
  await assert.rejects(registry.resolveAgent({ agentHash: "not-a-hash" }), rejectsWith(Code.InvalidArgument));
});

test("a call without the service credential is UNAUTHENTICATED", async () => {
  const stranger = createClient(RegistryService, transport(registryAddress, []));
  await assert.rejects(
    stranger.resolveAgent({ agentHash: required("SMOLTBOT_TEST_AGENT_HASH") }),
    rejectsWith(Code.Unauthenticated),
  );
});

test("ListTraces pages through the agent's traces", async () => {
  const agentId = required("SMOLTBOT_TEST_AGENT_ID");
  const expected: string[] = JSON.parse(required("SMOLTBOT_TEST_TRACE_IDS"));
  const seen: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await observer.listTraces({ agentId, pageSize: 2, pageToken });
    for (const trace of page.traces) {
      assert.equal(trace.agentId, agentId);
      seen.push(trace.traceId);
    }
    pageToken = page.nextPageToken;
    pages += 1;
  } while (pageToken && pages < 10);
  assert.ok(pages >= 2, `expected several pages of 2, got ${pages}`);
  assert.deepEqual([...seen].sort(), [...expected].sort());
});
