/**
 * Test doubles for OpenClaw's side: a plugin host that records `api.on` registrations so a test
 * can call the handlers the way OpenClaw's hook runner does, a log recorder, and a small HTTP
 * server standing in for the smoltbot API where a test needs to control its answers.
 */
import { once } from "node:events";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";

import type { HookHandler, HookName, OpenClawPluginApi, PluginHost, PluginLogger } from "../src/sdk.js";

export interface LogLine {
  level: "debug" | "info" | "warn" | "error";
  message: string;
}

export interface RecordingLogger {
  logger: PluginLogger;
  lines: LogLine[];
  at(level: LogLine["level"]): string[];
}

export function recordingLogger(): RecordingLogger {
  const lines: LogLine[] = [];
  const write = (level: LogLine["level"]) => (message: string) => {
    lines.push({ level, message });
  };
  return {
    logger: { debug: write("debug"), info: write("info"), warn: write("warn"), error: write("error") },
    lines,
    at: (level) => lines.filter((line) => line.level === level).map((line) => line.message),
  };
}

export interface HookRegistration {
  hookName: HookName;
  handler: unknown;
  opts: unknown;
}

export interface FakeHost extends RecordingLogger {
  host: PluginHost;
  registeredHooks(): HookName[];
  /** What `api.on` received, in order, as OpenClaw's registry records it. */
  registrations(): HookRegistration[];
  /** The handler the plugin registered for a hook, typed as OpenClaw's runner calls it. */
  handler<K extends HookName>(name: K): HookHandler<K>;
}

export function fakeHost(options: {
  pluginConfig?: Record<string, unknown>;
  registrationMode?: OpenClawPluginApi["registrationMode"];
} = {}): FakeHost {
  const logs = recordingLogger();
  const registered = new Map<HookName, unknown>();
  const registrations: HookRegistration[] = [];
  const on: OpenClawPluginApi["on"] = (hookName, handler, opts) => {
    registered.set(hookName, handler);
    registrations.push({ hookName, handler, opts });
  };
  const host: PluginHost = {
    on,
    logger: logs.logger,
    registrationMode: options.registrationMode ?? "full",
    ...(options.pluginConfig === undefined ? {} : { pluginConfig: options.pluginConfig }),
  };
  return {
    ...logs,
    host,
    registeredHooks: () => [...registered.keys()],
    registrations: () => [...registrations],
    handler<K extends HookName>(name: K): HookHandler<K> {
      const found = registered.get(name);
      if (found === undefined) throw new Error(`the plugin registered no ${name} handler`);
      // The map holds what `on` received for this very name, i.e. a HookHandler<K>.
      return found as HookHandler<K>;
    },
  };
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingMessage["headers"];
  body: unknown;
}

export type Responder = (request: RecordedRequest) => { status: number; body?: unknown } | "hang";

export interface FakeApi {
  url: string;
  requests: RecordedRequest[];
  respond: Responder;
  close(): Promise<void>;
}

/** An HTTP server on a free loopback port that records requests and answers via `respond`. */
export async function startFakeApi(respond: Responder): Promise<FakeApi> {
  const requests: RecordedRequest[] = [];
  const api: FakeApi = { url: "", requests, respond, close: async () => undefined };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const recorded: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body: text === "" ? undefined : (JSON.parse(text) as unknown),
      };
      requests.push(recorded);
      const answer = api.respond(recorded);
      if (answer === "hang") return;
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(answer.body === undefined ? "" : JSON.stringify(answer.body));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  api.url = `http://127.0.0.1:${port}`;
  api.close = async () => {
    server.closeAllConnections();
    server.close();
    await once(server, "close");
  };
  return api;
}

/** A loopback port with nothing listening on it (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

export const AGENT_ID = "smolt-0a1b2c3d4e5f";

/** Answers like the smoltbot API for resolve/sessions/tool-executions. */
export const okApi: Responder = (request) => {
  if (request.path === "/v1/agents/resolve") return { status: 200, body: { agent_id: AGENT_ID, created: false } };
  return { status: 200, body: {} };
};
