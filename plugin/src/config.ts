/**
 * The plugin's settings: `plugins.entries.smoltbot.config` in openclaw.json, then the
 * environment, then defaults. The JSON Schema here is the one `openclaw.plugin.json` declares
 * (a test keeps the two equal).
 */

export const DEFAULT_API_URL = "http://127.0.0.1:8000";
export const DEFAULT_TIMEOUT_MS = 1500;

/** The gateway and API check agent ids against this shape; anything else is a config error. */
export const AGENT_ID_PATTERN = /^smolt-[0-9a-f]{8,64}$/;

export const CONFIG_JSON_SCHEMA = {
  type: "object",
  additionalProperties: false,
  properties: {
    apiUrl: {
      type: "string",
      description: "Base URL of the smoltbot API (without /v1). Default: $SMOLTBOT_API_URL, else http://127.0.0.1:8000.",
    },
    timeoutMs: {
      type: "integer",
      minimum: 100,
      maximum: 10000,
      description: "Per-request timeout in milliseconds. Default: 1500.",
    },
    agentId: {
      type: "string",
      pattern: "^smolt-[0-9a-f]{8,64}$",
      description: "The smoltbot agent id. Default: resolved once from the agent's credential.",
    },
    reportToolExecutions: {
      type: "boolean",
      description: "Report tool calls OpenClaw executed, so traces can mark them. Default: true.",
    },
  },
} as const;

export interface SmoltbotConfig {
  /** Base URL without a trailing slash or /v1. */
  apiUrl: string;
  timeoutMs: number;
  agentId: string | undefined;
  reportToolExecutions: boolean;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** Thrown for plugin config OpenClaw's schema check would also reject. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

export function resolveConfig(pluginConfig: Readonly<Record<string, unknown>> | undefined, env: Env): SmoltbotConfig {
  const raw = pluginConfig ?? {};
  const apiUrl = optionalString(raw, "apiUrl") ?? nonEmpty(env["SMOLTBOT_API_URL"]) ?? DEFAULT_API_URL;
  const timeoutMs = raw["timeoutMs"] ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 10_000) {
    throw new ConfigError("timeoutMs must be an integer between 100 and 10000");
  }
  const agentId = optionalString(raw, "agentId");
  if (agentId !== undefined && !AGENT_ID_PATTERN.test(agentId)) {
    throw new ConfigError("agentId must look like smolt-<hex>");
  }
  const reportToolExecutions = raw["reportToolExecutions"] ?? true;
  if (typeof reportToolExecutions !== "boolean") {
    throw new ConfigError("reportToolExecutions must be a boolean");
  }
  return { apiUrl: normalizeApiUrl(apiUrl), timeoutMs, agentId, reportToolExecutions };
}

/**
 * `smoltbot up` prints the API as `http://host:port/v1`; accept that as well as the bare base,
 * since the plugin adds `/v1/...` itself.
 */
export function normalizeApiUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`apiUrl is not a URL: ${JSON.stringify(value)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ConfigError("apiUrl must be an http or https URL");
  }
  const path = url.pathname.replace(/\/+$/, "").replace(/\/v1$/, "");
  return `${url.origin}${path}`;
}

/** The agent's own model credential, as the headers the API authenticates writes with. */
export interface Credential {
  /** Which variable it came from, for messages; the value itself is never logged. */
  source: "ANTHROPIC_API_KEY" | "ANTHROPIC_AUTH_TOKEN";
  headers: Readonly<Record<string, string>>;
}

export function credentialFromEnv(env: Env): Credential | undefined {
  const apiKey = nonEmpty(env["ANTHROPIC_API_KEY"]);
  if (apiKey !== undefined) {
    return { source: "ANTHROPIC_API_KEY", headers: { "x-api-key": apiKey } };
  }
  const token = nonEmpty(env["ANTHROPIC_AUTH_TOKEN"]);
  if (token !== undefined) {
    return { source: "ANTHROPIC_AUTH_TOKEN", headers: { authorization: `Bearer ${token}` } };
  }
  return undefined;
}

function optionalString(raw: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const value = raw[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.trim() === "") {
    throw new ConfigError(`${key} must be a non-empty string`);
  }
  return value.trim();
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}
