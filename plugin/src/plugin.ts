/**
 * What the plugin does with OpenClaw's hooks.
 *
 * - `session_start` / `session_end` report the session as started / ended.
 * - `agent_end` (one agent run: the answer to one inbound message) reports a turn.
 * - `after_tool_call` reports the tool_use id as executed, when OpenClaw gives one.
 * - `gateway_stop` lets queued reports finish, within the timeout.
 *
 * Handlers return at once and never throw: reports go through one ordered queue (a session's
 * "started" reaches the API before its turns) that the agent never waits for. Only
 * `session_end` and `gateway_stop` hand OpenClaw a promise, bounded by the timeout, because at
 * shutdown OpenClaw drains them and the process may exit right after.
 */
import {
  AGENT_ID_PATTERN,
  type Credential,
  type Env,
  type SmoltbotConfig,
  credentialFromEnv,
  resolveConfig,
} from "./config.js";
import { Reporter } from "./reporter.js";
import type { HookContext, HookEvent, PluginHost, PluginLogger } from "./sdk.js";

/** The API's session_id and tool_use_id patterns; ids outside them would only earn a 422. */
const SESSION_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/;
const TOOL_USE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,199}$/;
/** Reports waiting for the API beyond this are dropped (the API is slow or hung). */
const MAX_PENDING = 256;
/** Sessions remembered at once; the oldest go first if OpenClaw never ends them. */
const MAX_SESSIONS = 10_000;

export type SessionEvent = "started" | "turn" | "ended";

interface SessionState {
  /** Turns this plugin counted. Only meaningful when `sawStart`. */
  turns: number;
  /**
   * Whether this plugin saw the session start. Only then is its own count the session's count
   * and sent as `turn_count` (which also repairs reports lost in an outage); for a session
   * that started before the plugin loaded, each turn is sent as "add one" instead.
   */
  sawStart: boolean;
}

export interface SmoltbotPluginOptions {
  config: SmoltbotConfig;
  credential: Credential;
  logger: PluginLogger;
  /** For tests: how long the reporter drops reports after finding the API unreachable. */
  retryAfterMs?: number;
  now?: () => Date;
}

export class SmoltbotPlugin {
  readonly reporter: Reporter;
  private readonly config: SmoltbotConfig;
  private readonly logger: PluginLogger;
  private readonly now: () => Date;
  private readonly sessions = new Map<string, SessionState>();
  private readonly sessionIdByKey = new Map<string, string>();
  private agentId: string | undefined;
  private queue: Promise<void> = Promise.resolve();
  private pending = 0;
  private overflowLogged = false;

  constructor(options: SmoltbotPluginOptions) {
    this.config = options.config;
    this.logger = options.logger;
    this.now = options.now ?? (() => new Date());
    this.agentId = options.config.agentId;
    this.reporter = new Reporter({
      apiUrl: options.config.apiUrl,
      timeoutMs: options.config.timeoutMs,
      headers: options.credential.headers,
      logger: options.logger,
      ...(options.retryAfterMs === undefined ? {} : { retryAfterMs: options.retryAfterMs }),
    });
  }

  /** Register the handlers on OpenClaw's plugin API. */
  register(host: PluginHost): void {
    host.on("session_start", (event, ctx) => {
      this.guard(() => this.onSessionStart(event, ctx));
    });
    host.on("agent_end", (event, ctx) => {
      this.guard(() => this.onAgentEnd(event, ctx));
    });
    host.on("session_end", (event, ctx) => this.guardAsync(() => this.onSessionEnd(event, ctx)));
    if (this.config.reportToolExecutions) {
      host.on("after_tool_call", (event, ctx) => {
        this.guard(() => this.onAfterToolCall(event, ctx));
      });
    }
    host.on("gateway_stop", () => this.guardAsync(() => this.drain()));
  }

  onSessionStart(event: HookEvent<"session_start">, ctx: HookContext<"session_start">): void {
    const sessionId = event.sessionId;
    const sessionKey = event.sessionKey ?? ctx.sessionKey;
    if (sessionKey !== undefined) this.remember(this.sessionIdByKey, sessionKey, sessionId);
    this.remember(this.sessions, sessionId, { turns: 0, sawStart: true });
    this.reportSession(sessionId, "started", undefined);
  }

  onAgentEnd(_event: HookEvent<"agent_end">, ctx: HookContext<"agent_end">): void {
    const sessionId = ctx.sessionId ?? (ctx.sessionKey === undefined ? undefined : this.sessionIdByKey.get(ctx.sessionKey));
    if (sessionId === undefined) {
      this.logger.debug?.("smoltbot: agent_end without a session id; turn not reported");
      return;
    }
    let state = this.sessions.get(sessionId);
    if (state === undefined) {
      state = { turns: 0, sawStart: false };
      this.remember(this.sessions, sessionId, state);
    }
    state.turns += 1;
    this.reportSession(sessionId, "turn", state.sawStart ? state.turns : undefined);
  }

  onSessionEnd(event: HookEvent<"session_end">, ctx: HookContext<"session_end">): Promise<void> {
    const sessionId = event.sessionId;
    const state = this.sessions.get(sessionId);
    this.sessions.delete(sessionId);
    const sessionKey = event.sessionKey ?? ctx.sessionKey;
    if (sessionKey !== undefined && this.sessionIdByKey.get(sessionKey) === sessionId) {
      this.sessionIdByKey.delete(sessionKey);
    }
    return this.reportSession(sessionId, "ended", state?.sawStart ? state.turns : undefined);
  }

  onAfterToolCall(event: HookEvent<"after_tool_call">, ctx: HookContext<"after_tool_call">): void {
    // An errored call may have been blocked before it ran; only a completed one is known to be executed.
    if (event.error !== undefined) return;
    const toolUseId = event.toolCallId ?? ctx.toolCallId;
    if (toolUseId === undefined || !TOOL_USE_ID_PATTERN.test(toolUseId)) return;
    this.enqueue((agentId) =>
      this.reporter.post("/v1/tool-executions", { agent_id: agentId, tool_use_id: toolUseId, executed: true }),
    );
  }

  /** Resolves once every report queued so far has been sent or dropped. */
  idle(): Promise<void> {
    return this.queue;
  }

  /** Let queued reports finish, but never keep OpenClaw waiting longer than one timeout. */
  drain(): Promise<void> {
    return withDeadline(this.queue, this.config.timeoutMs);
  }

  private reportSession(sessionId: string, event: SessionEvent, turnCount: number | undefined): Promise<void> {
    if (!SESSION_ID_PATTERN.test(sessionId)) {
      this.logger.debug?.(`smoltbot: session id ${JSON.stringify(sessionId.slice(0, 60))} does not fit the API; not reported`);
      return Promise.resolve();
    }
    const occurredAt = this.now().toISOString();
    const done = this.enqueue((agentId) =>
      this.reporter.post("/v1/sessions", {
        agent_id: agentId,
        session_id: sessionId,
        event,
        ...(turnCount === undefined ? {} : { turn_count: turnCount }),
        occurred_at: occurredAt,
      }),
    );
    return withDeadline(done, this.config.timeoutMs);
  }

  /** Queue a report behind the ones before it; it runs once the agent id is known. */
  private enqueue(send: (agentId: string) => Promise<unknown>): Promise<void> {
    if (this.pending >= MAX_PENDING) {
      if (!this.overflowLogged) {
        this.overflowLogged = true;
        this.logger.warn(`smoltbot: more than ${MAX_PENDING} reports waiting for the API; dropping new ones`);
      }
      return Promise.resolve();
    }
    this.pending += 1;
    const run = async (): Promise<void> => {
      try {
        const agentId = await this.resolveAgentId();
        if (agentId !== undefined) await send(agentId);
      } catch (error) {
        this.logger.error(`smoltbot: report failed unexpectedly: ${String(error)}`);
      } finally {
        this.pending -= 1;
        // Once the backlog has cleared, a later one is worth a warning of its own.
        if (this.pending === 0) this.overflowLogged = false;
      }
    };
    this.queue = this.queue.then(run);
    return this.queue;
  }

  /** The configured agent id, else the one the API resolves the credential to (asked once). */
  private async resolveAgentId(): Promise<string | undefined> {
    if (this.agentId !== undefined) return this.agentId;
    const result = await this.reporter.post("/v1/agents/resolve");
    if (!result.ok) return undefined;
    const body = result.body;
    if (typeof body === "object" && body !== null && "agent_id" in body && typeof body.agent_id === "string" &&
      AGENT_ID_PATTERN.test(body.agent_id)) {
      this.agentId = body.agent_id;
      this.logger.info(`smoltbot: reporting as agent ${this.agentId}`);
      return this.agentId;
    }
    this.logger.warn("smoltbot: /v1/agents/resolve answered without an agent id");
    return undefined;
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > MAX_SESSIONS) {
      const oldest = map.keys().next();
      if (!oldest.done) map.delete(oldest.value);
    }
  }

  /** A handler bug must never reach OpenClaw as an exception. */
  private guard(handle: () => void): void {
    try {
      handle();
    } catch (error) {
      this.logger.error(`smoltbot: hook handler failed: ${String(error)}`);
    }
  }

  private async guardAsync(handle: () => Promise<void>): Promise<void> {
    try {
      await handle();
    } catch (error) {
      this.logger.error(`smoltbot: hook handler failed: ${String(error)}`);
    }
  }
}

/**
 * Build the plugin from OpenClaw's API and the environment, and register its hooks.
 * Returns undefined (after one warning) when it cannot report: wrong load mode, bad config or
 * no credential to authenticate with.
 */
export function registerSmoltbot(host: PluginHost, env: Env = process.env): SmoltbotPlugin | undefined {
  // Other modes load the plugin to list its metadata or tools; hooks only matter in a live Gateway.
  if (host.registrationMode !== "full") return undefined;
  let config: SmoltbotConfig;
  try {
    config = resolveConfig(host.pluginConfig, env);
  } catch (error) {
    host.logger.error(`smoltbot: plugin disabled, invalid config: ${error instanceof Error ? error.message : String(error)}`);
    return undefined;
  }
  const credential = credentialFromEnv(env);
  if (credential === undefined) {
    host.logger.warn(
      "smoltbot: plugin disabled: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN in the Gateway's environment " +
        "(the agent's own credential is how the smoltbot API knows which agent is reporting)",
    );
    return undefined;
  }
  const plugin = new SmoltbotPlugin({ config, credential, logger: host.logger });
  plugin.register(host);
  host.logger.info(`smoltbot: reporting sessions to ${config.apiUrl} (credential from ${credential.source})`);
  return plugin;
}

function withDeadline(promise: Promise<void>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    void promise.finally(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
