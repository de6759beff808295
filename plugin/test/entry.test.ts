/**
 * The package as OpenClaw sees it: the manifest (read by OpenClaw's own manifest loader), the
 * default-exported entry and its config schema, and the config the plugin derives.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { describe, test } from "node:test";

import entry, { PLUGIN_ID } from "../src/index.js";
import { CONFIG_JSON_SCHEMA, ConfigError, credentialFromEnv, normalizeApiUrl, resolveConfig } from "../src/config.js";
import type { HookName } from "../src/sdk.js";
import { loadPluginManifest } from "./openclaw.js";

// dist/test/entry.test.js -> the package root
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(PACKAGE_ROOT, path), "utf8")) as Record<string, unknown>;
}

describe("package", () => {
  test("the manifest's config schema is the one the code validates with", async () => {
    const manifest = await readJson("openclaw.plugin.json");
    assert.equal(manifest["id"], PLUGIN_ID);
    assert.deepEqual(manifest["configSchema"], CONFIG_JSON_SCHEMA);
    assert.deepEqual(entry.configSchema?.jsonSchema, CONFIG_JSON_SCHEMA);
  });

  test("OpenClaw's own manifest loader accepts the manifest", async () => {
    const loaded = await loadPluginManifest(PACKAGE_ROOT);
    assert.ok(loaded.ok, JSON.stringify(loaded));
    assert.equal(loaded.manifest.id, PLUGIN_ID);
    assert.deepEqual(loaded.manifest.activation, { onStartup: true });
    assert.deepEqual(loaded.manifest.configSchema, CONFIG_JSON_SCHEMA);
  });

  test("package.json points OpenClaw at the built entry", async () => {
    const pkg = await readJson("package.json");
    const openclaw = pkg["openclaw"] as { extensions: string[] };
    assert.deepEqual(openclaw.extensions, ["./dist/src/index.js"]);
    const built = (await import(pathToFileURL(join(PACKAGE_ROOT, openclaw.extensions[0] ?? "")).href)) as { default: unknown };
    assert.equal(built.default, entry);
  });

  test("the entry is what definePluginEntry builds, with id, name and register", () => {
    assert.equal(entry.id, PLUGIN_ID);
    assert.equal(typeof entry.register, "function");
    assert.ok(entry.description);
  });

  test("the entry's schema accepts the documented config and rejects other keys", () => {
    const schema = entry.configSchema;
    assert.ok(schema?.safeParse);
    assert.equal(schema.safeParse({ apiUrl: "http://127.0.0.1:8000", timeoutMs: 1500, agentId: "smolt-0a1b2c3d", reportToolExecutions: false }).success, true);
    assert.equal(schema.safeParse({}).success, true);
    assert.equal(schema.safeParse({ apiKey: "sk-ant-x" }).success, false);
    assert.equal(schema.safeParse({ timeoutMs: 5 }).success, false);
    assert.equal(schema.safeParse({ agentId: "bob" }).success, false);
  });
});

describe("config", () => {
  test("defaults: the local API and a 1.5 s timeout", () => {
    assert.deepEqual(resolveConfig(undefined, {}), {
      apiUrl: "http://127.0.0.1:8000", timeoutMs: 1500, agentId: undefined, reportToolExecutions: true,
    });
  });

  test("SMOLTBOT_API_URL applies when the config names no apiUrl; the config wins otherwise", () => {
    assert.equal(resolveConfig({}, { SMOLTBOT_API_URL: "http://api.internal:9000" }).apiUrl, "http://api.internal:9000");
    assert.equal(resolveConfig({ apiUrl: "https://smoltbot.example" }, { SMOLTBOT_API_URL: "http://x:1" }).apiUrl, "https://smoltbot.example");
  });

  test("the API URL as `smoltbot up` prints it (with /v1) is accepted", () => {
    assert.equal(normalizeApiUrl("http://127.0.0.1:8000/v1"), "http://127.0.0.1:8000");
    assert.equal(normalizeApiUrl("http://127.0.0.1:8000/v1/"), "http://127.0.0.1:8000");
    assert.equal(normalizeApiUrl("https://host/smoltbot/"), "https://host/smoltbot");
    assert.throws(() => normalizeApiUrl("ftp://host"), ConfigError);
  });

  test("config values of the wrong type are refused", () => {
    assert.throws(() => resolveConfig({ timeoutMs: "fast" }, {}), ConfigError);
    assert.throws(() => resolveConfig({ agentId: "agent-1" }, {}), ConfigError);
    assert.throws(() => resolveConfig({ reportToolExecutions: "yes" }, {}), ConfigError);
  });

  test("the credential: x-api-key from ANTHROPIC_API_KEY, else a bearer ANTHROPIC_AUTH_TOKEN", () => {
    assert.deepEqual(credentialFromEnv({ ANTHROPIC_API_KEY: "k", ANTHROPIC_AUTH_TOKEN: "t" }), {
      source: "ANTHROPIC_API_KEY", headers: { "x-api-key": "k" },
    });
    assert.deepEqual(credentialFromEnv({ ANTHROPIC_AUTH_TOKEN: "t" }), {
      source: "ANTHROPIC_AUTH_TOKEN", headers: { authorization: "Bearer t" },
    });
    assert.equal(credentialFromEnv({ ANTHROPIC_API_KEY: " " }), undefined);
  });
});

// Compile-time facts about the SDK this plugin was written against (tsc fails if they change).
const hooksUsed: HookName[] = ["session_start", "session_end", "agent_end", "after_tool_call", "before_tool_call", "gateway_stop"];
// @ts-expect-error before_agent_start is not a typed plugin hook in openclaw 2026.9.6
const notAHook: HookName = "before_agent_start";
void hooksUsed;
void notAHook;
