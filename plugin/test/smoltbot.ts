/**
 * Starts the real smoltbot services the plugin talks to, as subprocesses of the test: the
 * Registry (agents and sessions, SQLite in a temporary home), the Observer (tool executions)
 * and the REST API in front of them. Each binds port 0 and the test reads the port it logs,
 * so runs never collide with another smoltbot on this machine (`smoltbot up` binds the
 * Registry and Observer on fixed ports). The gateway is not needed: the plugin talks only to
 * the API.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/smoltbot.js -> plugin/ -> the repository
const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const START_TIMEOUT_MS = 45_000;

export interface Smoltbot {
  /** Base URL of the API, without /v1. */
  apiUrl: string;
  /** Stop only the Observer, leaving the Registry and API up. */
  stopObserver(): Promise<void>;
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
  const env: NodeJS.ProcessEnv = { ...process.env, SMOLTBOT_HOME: home };
  // A database or secret from the caller's environment must not leak into the test's own.
  delete env["SMOLTBOT_DATABASE_URL"];
  delete env["SMOLTBOT_HASH_SECRET"];
  const children: Service[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.reverse().map((child) => child.stop()));
    await rm(home, { recursive: true, force: true });
  };
  try {
    // The API asks the upstream whether a credential is real before it creates an agent: a local
    // stand-in of the Anthropic API plays the upstream.
    const upstream = new Service("upstream", python, ["-m", "tests.support.anthropic_standin"], env);
    children.push(upstream);
    env["SMOLTBOT_UPSTREAM_URL"] = (await upstream.waitFor(/LISTENING (http:\/\/\S+)/))[1] ?? "";
    const registry = new Service("registry", python, smoltbot("serve", "registry", "--listen", "127.0.0.1:0"), env);
    children.push(registry);
    const registryPort = (await registry.waitFor(/registry listening on [^\s]+:(\d+)/))[1];
    env["SMOLTBOT_REGISTRY_ADDRESS"] = `127.0.0.1:${registryPort}`;
    const observer = new Service("observer", python, smoltbot("serve", "observer", "--listen", "127.0.0.1:0"), env);
    children.push(observer);
    const observerPort = (await observer.waitFor(/observer listening on [^\s]+:(\d+)/))[1];
    env["SMOLTBOT_OBSERVER_ADDRESS"] = `127.0.0.1:${observerPort}`;
    const api = new Service("api", python, smoltbot("serve", "api", "--host", "127.0.0.1", "--port", "0"), env);
    children.push(api);
    const apiUrl = (await api.waitFor(/API listening on (http:\/\/[^\s]+?)\/? /))[1] ?? "";
    return {
      apiUrl,
      stopObserver: () => observer.stop(),
      output: () => children.map((child) => `--- ${child.name}\n${child.output}`).join("\n"),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function smoltbot(...args: string[]): string[] {
  return ["-m", "smoltbot.cli.main", ...args];
}

class Service {
  output = "";
  private readonly process: ChildProcess;
  private exited: Promise<void>;
  private readonly listeners: Array<() => void> = [];

  constructor(readonly name: string, python: string, args: string[], env: NodeJS.ProcessEnv) {
    this.process = spawn(python, args, { env, cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
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
