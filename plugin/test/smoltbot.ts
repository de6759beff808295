/**
 * Starts the real smoltbot services the plugin talks to, as subprocesses of the test: the
 * Registry (sessions and agents, SQLite in a temporary home) and the REST API in front of it.
 * Both bind port 0 and the test reads the port each one logs. The Observer is deliberately
 * left out (its address points at a closed port), which is also how the tests see the API
 * answer for a backend that is down.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { closedPort } from "./helpers.js";

// dist/test/smoltbot.js -> plugin/ -> the repository
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const START_TIMEOUT_MS = 45_000;

export interface Smoltbot {
  /** Base URL of the API, without /v1. */
  apiUrl: string;
  /** Everything the services printed so far, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/** The Python that runs smoltbot, or undefined when this checkout has none (suite run alone). */
export function smoltbotPython(): string | undefined {
  const python = process.env["SMOLTBOT_PYTHON"] ?? join(REPO_ROOT, ".venv", "bin", "python");
  return existsSync(python) ? python : undefined;
}

export async function startSmoltbot(python: string): Promise<Smoltbot> {
  const home = await mkdtemp(join(tmpdir(), "smoltbot-plugin-test-"));
  const observerPort = await closedPort();
  const env: NodeJS.ProcessEnv = { ...process.env, SMOLTBOT_HOME: home, SMOLTBOT_OBSERVER_ADDRESS: `127.0.0.1:${observerPort}` };
  // A database or secret from the caller's environment must not leak into the test's own.
  delete env["SMOLTBOT_DATABASE_URL"];
  delete env["SMOLTBOT_HASH_SECRET"];
  const children: Service[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.reverse().map((child) => child.stop()));
    await rm(home, { recursive: true, force: true });
  };
  try {
    const registry = new Service("registry", python, ["serve", "registry", "--listen", "127.0.0.1:0"], env);
    children.push(registry);
    const registryPort = (await registry.waitFor(/registry listening on [^\s]+:(\d+)/))[1];
    const api = new Service("api", python, ["serve", "api", "--host", "127.0.0.1", "--port", "0"], {
      ...env, SMOLTBOT_REGISTRY_ADDRESS: `127.0.0.1:${registryPort}`,
    });
    children.push(api);
    const apiUrl = (await api.waitFor(/API listening on (http:\/\/[^\s]+?)\/? /))[1] ?? "";
    return { apiUrl, output: () => children.map((child) => child.output).join("\n"), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

class Service {
  output = "";
  private readonly process: ChildProcess;
  private exited: Promise<void>;
  private readonly listeners: Array<() => void> = [];

  constructor(readonly name: string, python: string, args: string[], env: NodeJS.ProcessEnv) {
    this.process = spawn(python, ["-m", "smoltbot.cli.main", ...args], { env, cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    const collect = (chunk: Buffer) => {
      this.output += chunk.toString("utf8");
      for (const listener of this.listeners) listener();
    };
    this.process.stdout?.on("data", collect);
    this.process.stderr?.on("data", collect);
    this.exited = new Promise((resolve) => {
      this.process.once("exit", () => {
        for (const listener of this.listeners) listener();
        resolve();
      });
    });
  }

  /** Resolves with the match once the output shows `pattern`; rejects if the process dies first. */
  waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${this.name} did not start within ${START_TIMEOUT_MS} ms:\n${this.output}`));
      }, START_TIMEOUT_MS);
      const check = () => {
        const match = this.output.match(pattern);
        if (match) {
          clearTimeout(timer);
          resolve(match);
        } else if (this.process.exitCode !== null || this.process.signalCode !== null) {
          clearTimeout(timer);
          reject(new Error(`${this.name} exited (${this.process.exitCode ?? this.process.signalCode}) before it was ready:\n${this.output}`));
        }
      };
      this.listeners.push(check);
      check();
    });
  }

  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    this.process.kill("SIGTERM");
    const killer = setTimeout(() => this.process.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(killer);
  }
}
