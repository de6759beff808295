/**
 * The plugin's hooks, dispatched by OpenClaw's own hook runner (as the Gateway does), against
 * the real smoltbot Registry, Observer and API (subprocesses). What the API then lists is what these
 * tests assert.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { registerSmoltbot } from "../src/plugin.js";
import type { HookContext, HookEvent } from "../src/sdk.js";
import { fakeHost } from "./helpers.js";
import { openClawHookRunner } from "./openclaw.js";
import { type Smoltbot, smoltbotPython, startSmoltbot } from "./smoltbot.js";

interface SessionRow {
  session_id: string;
  agent_id: string;
  source: string;
  status: string;
  started_at: string | null;
  ended_at: string | null;
  turn_count: number;
}

const python = smoltbotPython();

function newKey(): string {
  return `sk-ant-plugin-it-${randomBytes(12).toString("hex")}`;
}

function sessionStart(sessionId: string, sessionKey: string): [HookEvent<"session_start">, HookContext<"session_start">] {
  return [{ sessionId, sessionKey }, { agentId: "main", sessionId, sessionKey }];
}

function agentEnd(ctx: HookContext<"agent_end">): [HookEvent<"agent_end">, HookContext<"agent_end">] {
  return [{ runId: randomBytes(6).toString("hex"), messages: [{ role: "assistant", content: "done" }], success: true, durationMs: 800 }, ctx];
}

function sessionEnd(sessionId: string, sessionKey: string, messageCount: number): [HookEvent<"session_end">, HookContext<"session_end">] {
  return [{ sessionId, sessionKey, messageCount, reason: "new", durationMs: 5000 }, { agentId: "main", sessionId, sessionKey }];
}

describe("against the real smoltbot API", { skip: python === undefined ? "no smoltbot venv (.venv/bin/python or SMOLTBOT_PYTHON)" : false, timeout: 120_000 }, () => {
  let smoltbot: Smoltbot;

  before(async () => {
    smoltbot = await startSmoltbot(python ?? "");
  });
  after(async () => {
    await smoltbot?.stop();
  });

  async function resolveAgent(key: string): Promise<string> {
    const response = await fetch(`${smoltbot.apiUrl}/v1/agents/resolve`, { method: "POST", headers: { "x-api-key": key } });
    assert.equal(response.status, 200, await response.clone().text());
    const body = (await response.json()) as { agent_id: string };
    return body.agent_id;
  }

  async function sessions(agentId: string): Promise<Map<string, SessionRow>> {
    const response = await fetch(`${smoltbot.apiUrl}/v1/agents/${agentId}/sessions?limit=100`);
    assert.equal(response.status, 200, await response.clone().text());
    const body = (await response.json()) as { items: SessionRow[]; next_cursor: string | null };
    assert.equal(body.next_cursor, null);
    return new Map(body.items.map((row) => [row.session_id, row]));
  }

  test("sessions and turns reported by the hooks are what the API lists", async () => {
    const key = newKey();
    const fake = fakeHost({ pluginConfig: { apiUrl: `${smoltbot.apiUrl}/v1` } });
    const plugin = registerSmoltbot(fake.host, { ANTHROPIC_API_KEY: key });
    assert.ok(plugin);
    const openclaw = await openClawHookRunner(fake);

    const first = "0f3a9c52-1b7e-4d0a-9a61-2c8b5e7d4f10";
    const second = "7d1e2a4b-9c3f-4e5a-8b6d-0a1c2e3f4b5c";
    await openclaw.runSessionStart(...sessionStart(first, "agent:main:main"));
    for (let turn = 0; turn < 3; turn += 1) {
      await openclaw.runAgentEnd(...agentEnd({ agentId: "main", sessionId: first, sessionKey: "agent:main:main" }));
    }
    // `/new`: OpenClaw ends the first session and starts the next under the same key.
    await openclaw.runSessionEnd(...sessionEnd(first, "agent:main:main", 6));
    await openclaw.runSessionStart(...sessionStart(second, "agent:main:main"));
    await openclaw.runAgentEnd(...agentEnd({ agentId: "main", sessionKey: "agent:main:main" }));
    await plugin.idle();

    const agentId = await resolveAgent(key);
    const rows = await sessions(agentId);
    assert.deepEqual([...rows.keys()].sort(), [first, second].sort());
    const ended = rows.get(first);
    assert.equal(ended?.agent_id, agentId);
    assert.equal(ended?.source, "plugin");
    assert.equal(ended?.status, "ended");
    assert.equal(ended?.turn_count, 3);
    assert.ok(ended?.started_at && ended.ended_at && ended.started_at <= ended.ended_at);
    const active = rows.get(second);
    assert.equal(active?.status, "active");
    assert.equal(active?.turn_count, 1);
    assert.equal(active?.ended_at, null);
    assert.deepEqual(fake.at("warn"), [], smoltbot.output());
    assert.deepEqual(fake.at("error"), []);
  });

  test("after a plugin restart, turns of a running session add to the API's count", async () => {
    const key = newKey();
    const session = "session-restart-1";
    const before = fakeHost({ pluginConfig: { apiUrl: smoltbot.apiUrl } });
    const first = registerSmoltbot(before.host, { ANTHROPIC_API_KEY: key });
    assert.ok(first);
    const openclawBefore = await openClawHookRunner(before);
    await openclawBefore.runSessionStart(...sessionStart(session, "agent:main:restart"));
    await openclawBefore.runAgentEnd(...agentEnd({ sessionId: session }));
    await openclawBefore.runAgentEnd(...agentEnd({ sessionId: session }));
    await first.idle();

    // A new plugin instance (Gateway restart or config reload) never saw this session start.
    const afterRestart = fakeHost({ pluginConfig: { apiUrl: smoltbot.apiUrl } });
    const second = registerSmoltbot(afterRestart.host, { ANTHROPIC_API_KEY: key });
    assert.ok(second);
    const openclawAfter = await openClawHookRunner(afterRestart);
    await openclawAfter.runAgentEnd(...agentEnd({ sessionId: session }));
    await second.idle();

    const row = (await sessions(await resolveAgent(key))).get(session);
    assert.equal(row?.turn_count, 3);
    assert.equal(row?.status, "active");
  });

  test("another agent's id in config is refused by the API and logged once", async () => {
    const owner = newKey();
    const otherAgent = await resolveAgent(owner);
    const fake = fakeHost({ pluginConfig: { apiUrl: smoltbot.apiUrl, agentId: otherAgent } });
    const plugin = registerSmoltbot(fake.host, { ANTHROPIC_API_KEY: newKey() });
    assert.ok(plugin);
    const openclaw = await openClawHookRunner(fake);
    await openclaw.runSessionStart(...sessionStart("not-mine-1", "agent:main:x"));
    await openclaw.runAgentEnd(...agentEnd({ sessionId: "not-mine-1" }));
    await plugin.idle();
    assert.equal(fake.at("warn").length, 1);
    assert.match(fake.at("warn")[0] ?? "", /rejected POST \/v1\/sessions: HTTP 403/);
    assert.equal((await sessions(otherAgent)).size, 0);
  });

  test("executed tool calls are accepted; with the Observer down they are dropped with one warning", async () => {
    const key = newKey();
    const fake = fakeHost({ pluginConfig: { apiUrl: smoltbot.apiUrl } });
    const plugin = registerSmoltbot(fake.host, { ANTHROPIC_API_KEY: key });
    assert.ok(plugin);
    const openclaw = await openClawHookRunner(fake);
    const toolCall = (id: string): [HookEvent<"after_tool_call">, HookContext<"after_tool_call">] => [
      { toolName: "exec", params: { command: "ls" }, toolCallId: id, result: "ok", durationMs: 3 },
      { agentId: "main", sessionId: "with-tools-1", toolName: "exec", toolCallId: id },
    ];
    await openclaw.runSessionStart(...sessionStart("with-tools-1", "agent:main:tools"));
    await openclaw.runAfterToolCall(...toolCall("toolu_01A"));
    await openclaw.runAgentEnd(...agentEnd({ sessionId: "with-tools-1" }));
    await plugin.idle();
    assert.deepEqual(fake.at("warn"), [], smoltbot.output());

    await smoltbot.stopObserver();
    await openclaw.runAfterToolCall(...toolCall("toolu_01B"));
    await openclaw.runAfterToolCall(...toolCall("toolu_01C"));
    await openclaw.runAgentEnd(...agentEnd({ sessionId: "with-tools-1" }));
    await plugin.idle();
    assert.equal(fake.at("warn").length, 1, fake.at("warn").join("\n"));
    assert.match(fake.at("warn")[0] ?? "", /could not take POST \/v1\/tool-executions: HTTP 50\d/);
    // Sessions go to the Registry and keep landing.
    const row = (await sessions(await resolveAgent(key))).get("with-tools-1");
    assert.equal(row?.turn_count, 2);
  });

  test("API down: no exception reaches OpenClaw and exactly one warning is logged", async () => {
    const fake = fakeHost({ pluginConfig: { apiUrl: smoltbot.apiUrl } });
    const plugin = registerSmoltbot(fake.host, { ANTHROPIC_API_KEY: newKey() });
    assert.ok(plugin);
    const openclaw = await openClawHookRunner(fake);
    await openclaw.runSessionStart(...sessionStart("before-outage", "agent:main:down"));
    await plugin.idle();
    assert.deepEqual(fake.at("warn"), []);

    await smoltbot.stop();
    await assert.doesNotReject(async () => {
      for (let turn = 0; turn < 4; turn += 1) await openclaw.runAgentEnd(...agentEnd({ sessionId: "before-outage" }));
      await openclaw.runAfterToolCall({ toolName: "exec", params: {}, toolCallId: "toolu_x" }, { toolName: "exec" });
      await openclaw.runSessionEnd(...sessionEnd("before-outage", "agent:main:down", 8));
      await openclaw.runGatewayStop({ reason: "shutdown" }, {});
    });
    await plugin.idle();
    assert.equal(fake.at("warn").length, 1, fake.at("warn").join("\n"));
    assert.match(fake.at("warn")[0] ?? "", /^smoltbot API unreachable at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    assert.deepEqual(fake.at("error"), []);
  });
});
