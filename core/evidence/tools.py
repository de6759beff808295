"""What a tool call does, told from its name and arguments by fixed rules (no model call).

Claude Code's tool names first (Read, Write, Edit, Bash, WebFetch, ...), MCP tools by their
`mcp__<server>__<tool>` names, then the other ecosystems' under their own names: Codex (`shell`,
`exec_command`, `apply_patch`, the Responses built-ins `local_shell`, `shell`, `web_search`),
Gemini CLI (`run_shell_command`, `web_fetch`, `google_web_search`, `read_file`, `write_file`,
`replace`), and the usual `fetch` / `fetch_url` / `browse` of agent frameworks. A shell command is
split on its separators and each simple command is classified by its program and flags. The classes
are coarse on purpose: a rule that can be read in one line is one a person can check when it fires.
"""

from __future__ import annotations

import fnmatch
import functools
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "DEFAULT_UNTRUSTED_TOOLS",
    "Action",
    "ToolPolicy",
    "classify_call",
    "classify_shell",
    "shell_segments",
]


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    PUSH = "push"
    COMMIT = "commit"
    INSTALL = "install"
    NETWORK = "network"
    DESTRUCTIVE = "destructive"
    EXECUTE = "execute"


#: Tools whose results carry content nobody in the session wrote: the web and third-party MCP servers.
DEFAULT_UNTRUSTED_TOOLS: tuple[str, ...] = ("WebFetch", "WebSearch", "web_fetch", "web_search", "mcp__*",
                                            "google_web_search", "fetch", "fetch_url", "browse",
                                            "web_search_preview")

_READ_TOOLS = {"Read", "Glob", "Grep", "LS", "WebFetch", "WebSearch", "TodoRead", "NotebookRead",
               "read_file", "read_many_files", "list_directory", "glob", "search_file_content",
               "view_image", "web_fetch", "web_search", "google_web_search", "fetch", "fetch_url"}
_WRITE_TOOLS = {"Write", "Edit", "MultiEdit", "NotebookEdit", "apply_patch", "write_file", "replace",
                "edit_file"}
_NETWORK_TOOLS = {"WebFetch", "WebSearch", "web_fetch", "web_search", "google_web_search", "fetch",
                  "fetch_url", "browse", "web_search_preview"}
_SHELL_TOOLS = {"Bash", "bash", "shell", "local_shell", "run_shell_command", "execute_command",
                "exec_command", "shell_command", "container.exec"}
#: Where a shell tool's command line is: Claude Code and Gemini CLI `command`, Codex `exec_command`
#: `cmd`, a Responses `local_shell_call` its `action.command` (a list of words).
_COMMAND_KEYS = ("command", "cmd")

_SEPARATORS = re.compile(r"\|\||&&|[;|\n&]")
_READ_PROGRAMS = {
    "cat", "less", "more", "head", "tail", "ls", "find", "grep", "rg", "ag", "wc", "file", "stat", "pwd",
    "echo", "printf", "which", "tree", "diff", "du", "df", "env", "ps", "whoami", "date", "sort", "uniq",
    "cut", "awk", "jq", "true", "false", "test", "[", "type", "uname", "id", "basename", "dirname",
}
_WRITE_PROGRAMS = {"touch", "mkdir", "cp", "mv", "tee", "ln", "chmod", "chown", "truncate", "patch",
                   "install", "rsync"}
_DELETE_PROGRAMS = {"rm", "rmdir", "shred", "unlink"}
_DESTRUCTIVE_PROGRAMS = {"dd", "mkfs", "fdisk", "shred", "shutdown", "reboot", "kill", "pkill", "killall"}
_NETWORK_PROGRAMS = {"curl", "wget", "nc", "ncat", "ssh", "scp", "ftp", "telnet"}
_INSTALLERS = {"pip", "pip3", "npm", "pnpm", "yarn", "apt", "apt-get", "brew", "cargo", "gem", "uv"}
_GIT_READ = {"status", "log", "diff", "show", "blame", "branch", "remote", "fetch", "ls-files", "rev-parse"}


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """Which tools read untrusted content; a card can name its own (fnmatch patterns)."""

    untrusted: tuple[str, ...] = DEFAULT_UNTRUSTED_TOOLS
    trusted: tuple[str, ...] = ()
    #: The agent's workspace: a file read outside it is untrusted. None: reads are trusted.
    workspace: str | None = None
    read_tools: frozenset[str] = field(default_factory=lambda: frozenset({"Read", "NotebookRead"}))

    def is_untrusted(self, tool_name: str, tool_input: Any = None) -> bool:
        named = _named(self.trusted, self.untrusted, tool_name)
        if named is not None:
            return named
        if tool_name in self.read_tools and self.workspace and isinstance(tool_input, Mapping):
            path = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
            if isinstance(path, str) and path.startswith("/"):
                norm, root = posixpath.normpath(path), posixpath.normpath(self.workspace)
                return not (norm == root or norm.startswith(root.rstrip("/") + "/"))
        return False


@functools.lru_cache(maxsize=4096)
def _named(trusted: tuple[str, ...], untrusted: tuple[str, ...], tool_name: str) -> bool | None:
    """What the patterns say of a tool by its name alone (False: trusted, True: untrusted, None:
    neither). Cached: a history names the same few tools at every call, for every result."""
    if any(fnmatch.fnmatchcase(tool_name, p) for p in trusted):
        return False
    if any(fnmatch.fnmatchcase(tool_name, p) for p in untrusted):
        return True
    return None


def shell_segments(command: str) -> list[str]:
    """The simple commands of a shell line, split on `;`, `&&`, `||`, `|`, `&` and newlines."""
    return [s.strip() for s in _SEPARATORS.split(command) if s.strip()]


def _program(words: list[str]) -> tuple[str, list[str]]:
    # Skip `sudo`, `env X=1`, assignments: the program is the first word that is none of them.
    rest = list(words)
    while rest and (rest[0] in {"sudo", "env", "nohup", "time", "command", "exec"} or
                    re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", rest[0])):
        rest = rest[1:]
    if not rest:
        return "", []
    return rest[0].rsplit("/", 1)[-1], rest[1:]


def classify_shell(command: str) -> set[Action]:
    """The actions of a shell command line, by its programs, their flags and output redirections."""
    actions: set[Action] = set()
    for segment in shell_segments(command):
        words = segment.split()
        if re.search(r"(?<![0-9&])>{1,2}\s*(?!/dev/null|&)\S", segment):
            actions.add(Action.WRITE)
        program, args = _program(words)
        flags = " ".join(a for a in args if a.startswith("-"))
        if not program:
            continue
        if program in _READ_PROGRAMS:
            actions.add(Action.READ)
        elif program == "sed":
            actions.add(Action.WRITE if re.search(r"(^|\s)-i", " " + flags) else Action.READ)
        elif program in _WRITE_PROGRAMS:
            actions.add(Action.WRITE)
        elif program in _DELETE_PROGRAMS:
            actions.update({Action.DELETE, Action.WRITE})
            if re.search(r"-\w*r\w*f|-\w*f\w*r|--recursive|--force", flags):
                actions.add(Action.DESTRUCTIVE)
        elif program in _NETWORK_PROGRAMS:
            actions.add(Action.NETWORK)
        elif program in _INSTALLERS and args[:1] and args[0] in {"install", "add", "i", "-S"}:
            actions.update({Action.INSTALL, Action.WRITE})
        elif program == "git" and args:
            sub = args[0]
            if sub == "push":
                actions.update({Action.PUSH, Action.WRITE, Action.NETWORK})
                if "-f" in args or "--force" in args or any(a.startswith("--force") for a in args):
                    actions.add(Action.DESTRUCTIVE)
            elif sub == "commit":
                actions.update({Action.COMMIT, Action.WRITE})
            elif sub in _GIT_READ:
                actions.add(Action.READ)
            elif sub in {"reset", "clean", "checkout", "restore"} and ("--hard" in args or sub == "clean"
                                                                       or "--" in args or "." in args):
                actions.update({Action.DESTRUCTIVE, Action.WRITE, Action.DELETE})
            else:
                actions.add(Action.WRITE)
        elif program in {"sh", "bash", "zsh", "python", "python3", "node", "perl", "ruby", "eval"}:
            actions.add(Action.EXECUTE)
        else:
            actions.add(Action.EXECUTE)
        if program in _DESTRUCTIVE_PROGRAMS:
            actions.add(Action.DESTRUCTIVE)
    return actions


def classify_call(name: str, tool_input: Any) -> set[Action]:
    """The actions of one tool call."""
    if name in _SHELL_TOOLS:
        found = tool_input.get("action", tool_input) if isinstance(tool_input, Mapping) else None
        found = found if isinstance(found, Mapping) else tool_input
        command = next((found[k] for k in _COMMAND_KEYS if k in found), None) if isinstance(
            found, Mapping) else None
        if isinstance(command, list):
            # Codex runs `["bash", "-lc", "<the command line>"]`: the line is what is run.
            shell = len(command) == 3 and str(command[0]).rsplit("/", 1)[-1] in {"bash", "sh", "zsh"} \
                and command[1] in {"-c", "-lc"}
            command = str(command[2]) if shell else " ".join(str(c) for c in command)
        return classify_shell(command) if isinstance(command, str) else {Action.EXECUTE}
    actions: set[Action] = set()
    if name in _READ_TOOLS:
        actions.add(Action.READ)
    if name in _WRITE_TOOLS:
        actions.add(Action.WRITE)
    if name in _NETWORK_TOOLS:
        actions.add(Action.NETWORK)
    if not actions:
        actions.add(Action.EXECUTE)
    return actions
