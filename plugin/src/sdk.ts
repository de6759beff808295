/**
 * Types of the OpenClaw plugin SDK that this plugin relies on, derived from the public
 * `OpenClawPluginApi` so they follow the installed `openclaw` package.
 *
 * The SDK's hook event and context types (`PluginHookSessionStartEvent`, ...) live in internal
 * chunks that `openclaw/plugin-sdk/*` does not re-export by name, so they are reached through
 * the signature of `api.on` instead of a deep import that the package's `exports` would refuse.
 */
import type { OpenClawPluginApi, PluginLogger } from "openclaw/plugin-sdk/plugin-entry";

type On = OpenClawPluginApi["on"];

// Only its type is used (an instantiation expression below); nothing is emitted for it.
declare const on: On;

/** Every typed hook name `api.on` accepts. */
export type HookName = Parameters<On>[0];
/** The handler `api.on(name, handler)` takes for one hook. */
export type HookHandler<K extends HookName> = Parameters<typeof on<K>>[1];
/** The event OpenClaw passes to a hook's handler. */
export type HookEvent<K extends HookName> = Parameters<HookHandler<K>>[0];
/** The context OpenClaw passes to a hook's handler. */
export type HookContext<K extends HookName> = Parameters<HookHandler<K>>[1];

/** The part of the plugin API this plugin uses; tests supply exactly this. */
export type PluginHost = Pick<OpenClawPluginApi, "on" | "logger" | "pluginConfig" | "registrationMode">;

export type { OpenClawPluginApi, PluginLogger };
