/**
 * Fire-and-forget HTTP reporter for the smoltbot API.
 *
 * - Every call has a short timeout and resolves to a result; nothing here ever throws or rejects.
 * - The API being unreachable (connection refused, no answer in time) is logged once when it
 *   happens, and once more when the API answers again, never per report. While it is down,
 *   reports are dropped without a network call for `retryAfterMs`, so an outage costs nothing.
 * - A 5xx means the API answered but a service behind it is down (the observer, say, while
 *   the registry is fine), so it is tracked per endpoint: logged once when an endpoint starts
 *   failing and once when it works again, without holding back reports to other endpoints.
 * - A 4xx answer (bad credential, wrong agent, invalid body) is logged once per endpoint and
 *   status: it will not fix itself, and repeating it per event would flood OpenClaw's log.
 * - The credential travels only in request headers; no message includes it.
 */
import type { PluginLogger } from "./sdk.js";

export const DEFAULT_RETRY_AFTER_MS = 5000;

export interface ReporterOptions {
  /** Base URL without /v1. */
  apiUrl: string;
  timeoutMs: number;
  /** Authentication headers sent with every request. */
  headers: Readonly<Record<string, string>>;
  logger: PluginLogger;
  /** How long to drop reports without trying after the API was found unreachable. */
  retryAfterMs?: number;
  fetch?: typeof fetch;
  now?: () => number;
}

export type ReportResult =
  | { ok: true; status: number; body: unknown }
  /** The request was sent and failed, or (skipped) not sent because the API is down. */
  | { ok: false; reason: "unreachable" | "skipped" }
  /** The API answered with a 5xx: a service behind it is unavailable. */
  | { ok: false; reason: "unavailable"; status: number }
  /** The API answered with a 4xx. */
  | { ok: false; reason: "rejected"; status: number };

export class Reporter {
  readonly apiUrl: string;
  private readonly timeoutMs: number;
  private readonly headers: Readonly<Record<string, string>>;
  private readonly logger: PluginLogger;
  private readonly retryAfterMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => number;
  private down = false;
  private retryAt = 0;
  private readonly rejectionsLogged = new Set<string>();
  private readonly failingPaths = new Set<string>();

  constructor(options: ReporterOptions) {
    this.apiUrl = options.apiUrl;
    this.timeoutMs = options.timeoutMs;
    this.headers = options.headers;
    this.logger = options.logger;
    this.retryAfterMs = options.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
    this.fetchImpl = options.fetch ?? fetch;
    this.now = options.now ?? Date.now;
  }

  /** Whether the last attempt found the API unreachable. */
  get unreachable(): boolean {
    return this.down;
  }

  /** POST a JSON body (or none) to `path` under the API base. Never throws. */
  async post(path: string, body?: unknown): Promise<ReportResult> {
    if (this.down && this.now() < this.retryAt) {
      return { ok: false, reason: "skipped" };
    }
    let response: Response;
    let text: string;
    try {
      const init: RequestInit = {
        method: "POST",
        headers: { ...this.headers, accept: "application/json", ...(body === undefined ? {} : { "content-type": "application/json" }) },
        signal: AbortSignal.timeout(this.timeoutMs),
      };
      if (body !== undefined) init.body = JSON.stringify(body);
      response = await this.fetchImpl(`${this.apiUrl}${path}`, init);
      text = await response.text();
    } catch (error) {
      this.markDown(describeFailure(error, this.timeoutMs));
      return { ok: false, reason: "unreachable" };
    }
    this.markUp();
    if (response.status >= 500) {
      this.markFailing(path, response.status, text);
      return { ok: false, reason: "unavailable", status: response.status };
    }
    this.markWorking(path);
    if (response.status >= 400) {
      this.logRejection(path, response.status, text);
      return { ok: false, reason: "rejected", status: response.status };
    }
    return { ok: true, status: response.status, body: parseJson(text) };
  }

  private markDown(reason: string): void {
    this.retryAt = this.now() + this.retryAfterMs;
    if (this.down) return;
    this.down = true;
    safeLog(() =>
      this.logger.warn(
        `smoltbot API unreachable at ${this.apiUrl} (${reason}); session and turn reports are dropped until it answers again`,
      ),
    );
  }

  private markUp(): void {
    if (!this.down) return;
    this.down = false;
    safeLog(() => this.logger.info(`smoltbot API reachable again at ${this.apiUrl}`));
  }

  private markFailing(path: string, status: number, text: string): void {
    if (this.failingPaths.has(path)) return;
    this.failingPaths.add(path);
    safeLog(() =>
      this.logger.warn(
        `smoltbot API could not take POST ${path}: HTTP ${status}${errorMessage(text)}; those reports are dropped until it can`,
      ),
    );
  }

  private markWorking(path: string): void {
    if (!this.failingPaths.delete(path)) return;
    safeLog(() => this.logger.info(`smoltbot API takes POST ${path} again`));
  }

  private logRejection(path: string, status: number, text: string): void {
    const key = `${path} ${status}`;
    if (this.rejectionsLogged.has(key)) return;
    this.rejectionsLogged.add(key);
    safeLog(() =>
      this.logger.warn(`smoltbot API rejected POST ${path}: HTTP ${status}${errorMessage(text)} (logged once)`),
    );
  }
}

function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof Error) {
    if (error.name === "TimeoutError" || error.name === "AbortError") return `no answer within ${timeoutMs} ms`;
    const cause: unknown = error.cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      return code ? `${code}` : cause.message;
    }
    return error.message;
  }
  return String(error);
}

function parseJson(text: string): unknown {
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** The API's error body is `{"error": {"code", "message", ...}}`; show its message, briefly. */
function errorMessage(text: string): string {
  const body = parseJson(text);
  if (typeof body === "object" && body !== null && "error" in body) {
    const error: unknown = body.error;
    if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
      return `: ${error.message.slice(0, 200)}`;
    }
  }
  return "";
}

/** A host logger that throws must not turn a report into an exception inside OpenClaw. */
function safeLog(write: () => void): void {
  try {
    write();
  } catch {
    // Nothing sensible left to do: the log itself is what failed.
  }
}
