/**
 * smoltbot's OpenClaw plugin: reports the agent's sessions, turns and executed tool calls to
 * the smoltbot API, so traces carry OpenClaw's own session boundaries.
 */
import { buildJsonPluginConfigSchema, definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

import { CONFIG_JSON_SCHEMA } from "./config.js";
import { registerSmoltbot } from "./plugin.js";

export const PLUGIN_ID = "smoltbot";

export default definePluginEntry({
  id: PLUGIN_ID,
  name: "smoltbot",
  description: "Reports sessions, turns and executed tool calls to smoltbot",
  // Lazy: building the validator loads OpenClaw's JSON Schema machinery, needed only to validate.
  configSchema: () => buildJsonPluginConfigSchema(structuredClone(CONFIG_JSON_SCHEMA)),
  register(api) {
    registerSmoltbot(api);
  },
});

export { SmoltbotPlugin, registerSmoltbot } from "./plugin.js";
export { Reporter } from "./reporter.js";
export { CONFIG_JSON_SCHEMA, resolveConfig } from "./config.js";
