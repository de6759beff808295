/**
 * Pieces of OpenClaw itself, loaded from the pinned `openclaw` package, so tests check the
 * plugin with OpenClaw's own code rather than a re-implementation:
 *
 * - its hook runner, to dispatch events the way the Gateway does (`runSessionStart`,
 *   `runAgentEnd`, ...), with the options the Gateway's global runner uses;
 * - its manifest loader, to read openclaw.plugin.json as plugin discovery does.
 *
 * Neither is a public SDK export (OpenClaw's own test helpers are repo-local), so each is found
 * in the build by its function name and typed here with the SDK's hook types.
 */
import { readFile, readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import type { HookContext, HookEvent } from "../src/sdk.js";
import type { FakeHost } from "./helpers.js";

export interface OpenClawHookRunner {
  runSessionStart(event: HookEvent<"session_start">, ctx: HookContext<"session_start">): Promise<void>;
  runSessionEnd(event: HookEvent<"session_end">, ctx: HookContext<"session_end">): Promise<void>;
  runAgentEnd(event: HookEvent<"agent_end">, ctx: HookContext<"agent_end">): Promise<void>;
  runAfterToolCall(event: HookEvent<"after_tool_call">, ctx: HookContext<"after_tool_call">): Promise<void>;
  runGatewayStop(event: HookEvent<"gateway_stop">, ctx: HookContext<"gateway_stop">): Promise<void>;
}

export type LoadedManifest =
  | { ok: true; manifest: { id: string; activation?: unknown; configSchema?: unknown } }
  | { ok: false; error: unknown };

/** A function defined at the top level of one of openclaw's `dist/<prefix>-<hash>.mjs` chunks. */
async function openClawFunction(chunkPrefix: string, functionName: string): Promise<unknown> {
  const dist = dirname(dirname(fileURLToPath(import.meta.resolve("openclaw/plugin-sdk/plugin-entry"))));
  const chunk = new RegExp(`^${chunkPrefix}-[\\w-]+\\.mjs$`);
  const definition = new RegExp(`^function ${functionName}\\(`, "m");
  for (const name of (await readdir(dist)).filter((file) => chunk.test(file))) {
    // Import only the chunk that defines it: others pull in modules that need Node 22+.
    if (!definition.test(await readFile(join(dist, name), "utf8"))) continue;
    const module = (await import(pathToFileURL(join(dist, name)).href)) as Record<string, unknown>;
    const found = Object.values(module).find((value) => typeof value === "function" && value.name === functionName);
    if (found !== undefined) return found;
  }
  throw new Error(`openclaw's ${functionName} not found in its build; was the pinned openclaw version changed?`);
}

/** A runner over the hooks `fake` received from the plugin, built as the Gateway builds its own. */
export async function openClawHookRunner(fake: FakeHost, pluginId = "smoltbot"): Promise<OpenClawHookRunner> {
  const create = (await openClawFunction("hooks", "createHookRunner")) as (registry: unknown, options: unknown) => OpenClawHookRunner;
  const typedHooks = fake.registrations().map(({ hookName, handler, opts }) => ({
    pluginId,
    hookName,
    handler,
    source: "test",
    ...(typeof opts === "object" && opts !== null ? opts : {}),
  }));
  const registry = { hooks: [], typedHooks, plugins: [{ id: pluginId, status: "loaded" }] };
  return create(registry, {
    logger: fake.logger,
    catchErrors: true,
    failurePolicyByHook: { before_agent_run: "fail-closed", before_install: "fail-closed", before_tool_call: "fail-closed" },
  });
}

/** openclaw.plugin.json in `rootDir`, as OpenClaw's plugin discovery reads it. */
export async function loadPluginManifest(rootDir: string): Promise<LoadedManifest> {
  const load = (await openClawFunction("manifest", "loadPluginManifest")) as (rootDir: string) => LoadedManifest;
  return load(rootDir);
}
