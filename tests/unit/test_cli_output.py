"""Rendering: plain text when piped, every field read through the contract, one-line errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from smoltbot.cli import api_contract
from smoltbot.cli.commands_card import _summary
from smoltbot.cli.commands_integrity import _rows
from smoltbot.cli.commands_logs import trace_row
from smoltbot.cli.errors import CliError, handles_errors
from smoltbot.cli.main import app
from smoltbot.cli.output import Output, ago, local_time, percent, plain_table

TRACE: dict[str, Any] = {
    "trace_id": "tr-1",
    "agent_id": "smolt-0a1b2c3d",
    "card_id": "ac-1",
    "timestamp": "2026-01-02T03:04:05Z",
    "action": {
        "type": "execute",
        "name": "delete_file",
        "category": "forbidden",
        "parameters": {"path": "x"},
    },
    "decision": {
        "alternatives_considered": [],
        "selected": "delete_file",
        "selection_reasoning": "The old log file is in the way;\ndeleting it is quickest.",
        "values_applied": [],
        "confidence": 0.7,
    },
    "context": {"session_id": "s-1", "prior_trace_ids": []},
    "verification": {
        "verified": False,
        "violations": [
            {
                "type": "forbidden_action",
                "severity": "critical",
                "description": "delete_file is forbidden",
                "trace_field": "action.name",
            }
        ],
        "warnings": [],
        "card_id": "ac-1",
        "checks_performed": [],
    },
    "observation": {
        "outcome": "complete",
        "model": "claude-sonnet-4-5",
        "reasoning": {"present": True, "excerpt": "The old log file"},
    },
}


def test_a_trace_row_shows_time_action_verification_violations_and_decision() -> None:
    row = [cell if isinstance(cell, str) else cell.plain for cell in trace_row(TRACE)]

    assert row == [local_time("2026-01-02T03:04:05Z"), "execute delete_file", "FAIL",
                   "forbidden_action(critical)", "The old log file is in the way; deleting it is quickest."]


def test_a_trace_row_of_a_failed_exchange_shows_the_outcome_and_survives_missing_fields() -> None:
    row = trace_row({"trace_id": "tr-2", "observation": {"outcome": "upstream_error"}})

    assert [cell if isinstance(cell, str) else cell.plain for cell in row] == [
        "-",
        "? ?",
        "upstream_error",
        "-",
        "-",
    ]


def test_reading_a_field_the_contract_does_not_list_is_a_programming_error() -> None:
    with pytest.raises(KeyError, match=r"api_contract\.FIELDS"):
        api_contract.read(TRACE, "TraceList", "items[].action.tool")
    with pytest.raises(KeyError):
        api_contract.read({}, "Agent", "last_seen")


def test_plain_tables_align_columns_without_box_characters() -> None:
    lines = plain_table(("time", "action", "decision"), [["10:00", "execute read_file", "read it"],
                                                          ["10:01", "respond", "done"]])

    assert lines == ["TIME   ACTION             DECISION",
                     "10:00  execute read_file  read it",
                     "10:01  respond            done"]


def test_piped_output_is_plain_text_and_json_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output()
    assert not out.rich  # captured stdout is not a terminal
    out.fields([("agent", "smolt-0a1b2c3d"), ("traces", "3")])
    out.json({"a": 1})
    assert capsys.readouterr().out == 'agent:  smolt-0a1b2c3d\ntraces: 3\n{\n  "a": 1\n}\n'


def test_integrity_rows_show_both_windows_and_each_violation_type() -> None:
    window = {"total_traces": 4, "verified_traces": 3, "score": 0.75, "violation_count": 1,
              "violations_by_type": {"forbidden_action": 1}, "with_reasoning": 2, "with_model_analysis": 0,
              "failed": 0}
    rows = _rows({"recent": window, "all_time": {**window, "score": None, "total_traces": 0}})
    plain = {row[0]: [c if isinstance(c, str) else c.plain for c in row[1:]] for row in rows}

    assert plain["score"] == ["75.0%", "-"]
    assert plain["verified"] == ["3 / 4", "0"]
    assert plain["  forbidden_action"] == ["1", "1"]
    assert plain["with reasoning"] == ["2 / 4", "0"]


def test_the_card_summary_reads_only_listed_fields() -> None:
    card = {
        "card_id": "ac-1",
        "agent_id": "smolt-0a1b2c3d",
        "card_version": "unified/2026-04-26",
        "autonomy_mode": "observe",
        "integrity_mode": "observe",
        "principal": {"type": "human", "relationship": "delegated_authority"},
        "values": {"declared": ["honesty"]},
        "autonomy": {
            "bounded_actions": [],
            "forbidden_actions": ["rm"],
            "escalation_triggers": [{"condition": "x > 1", "action": "escalate", "reason": "r"}],
        },
        "audit": {"retention_days": 90},
    }

    summary = dict(_summary(card))

    assert summary["bounded actions"] == "any (not restricted)"
    assert summary["forbidden actions"] == "rm"
    assert summary["escalation"] == "x > 1 -> escalate"
    assert summary["audit"] == "90 days"


def test_times_and_scores_for_people() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert ago((now - timedelta(minutes=3)).isoformat(), now) == "3 min ago"
    assert ago(None) == "never"
    assert percent(0.8766) == "87.7%" and percent(None) == "-"
    assert local_time(None) == "-"


def test_an_unexpected_exception_is_still_one_line_and_exit_1() -> None:
    probe = typer.Typer()

    @probe.command()
    @handles_errors
    def boom() -> None:
        raise RuntimeError("kaput")

    @probe.command()
    @handles_errors
    def fine() -> None:
        raise CliError("do this instead")

    runner = CliRunner()
    result = runner.invoke(probe, ["boom"], env={"SMOLTBOT_DEBUG": None})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unexpected RuntimeError: kaput "
        "(this is a smoltbot bug; set SMOLTBOT_DEBUG=1 to see the traceback)"
    ]
    result = runner.invoke(probe, ["fine"])
    assert (result.exit_code, result.stderr) == (1, "error: do this instead\n")


# --------------------------------------------------------------------------- card validate (offline)

CARD = {
    "card_version": "unified/2026-04-26",
    "autonomy_mode": "observe",
    "integrity_mode": "observe",
    "principal": {"type": "unspecified", "relationship": "delegated_authority"},
    "values": {"declared": ["transparency"]},
    "autonomy": {
        "bounded_actions": ["read_file"],
        "forbidden_actions": ["delete_file"],
        "escalation_triggers": [],
    },
    "audit": {"retention_days": 30, "queryable": False, "trace_format": "ap-trace-v1"},
}


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SMOLTBOT_HOME", str(tmp_path / "sb"))
    monkeypatch.setenv("SMOLTBOT_API_URL", "http://127.0.0.1:9")  # nothing may be called
    return CliRunner()


def test_card_validate_accepts_a_valid_card_offline(offline: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(CARD))

    result = offline.invoke(app, ["card", "validate", str(path)])

    assert result.exit_code == 0, result.output
    assert f"{path} is a valid alignment card." in result.stdout
    assert "forbidden actions: delete_file" in result.stdout
    stored = json.loads(offline.invoke(app, ["card", "validate", str(path), "--json"]).stdout)
    assert stored["card_version"] == "unified/2026-04-26" and stored["issued_at"]


def test_card_validate_reads_stdin(offline: CliRunner) -> None:
    result = offline.invoke(app, ["card", "validate", "-"], input=json.dumps(CARD))

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "content,fragment",
    [
        (
            json.dumps({**CARD, "autonomy": {**CARD["autonomy"], "forbiden_actions": []}}),
            "autonomy.forbiden_actions",
        ),
        (json.dumps({**CARD, "autonomy_mode": "yolo"}), "autonomy_mode"),
        (json.dumps({**CARD, "card_version": "9"}), "card_version"),
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_card_validate_names_what_to_fix_in_one_line(offline: CliRunner, tmp_path: Path, content: str,
                                                     fragment: str) -> None:
    path = tmp_path / "card.json"
    path.write_text(content)

    result = offline.invoke(app, ["card", "validate", str(path)])

    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"error: {path}: ")
    assert fragment in result.stderr


def test_card_validate_of_a_missing_file_is_one_line(offline: CliRunner, tmp_path: Path) -> None:
    result = offline.invoke(app, ["card", "validate", str(tmp_path / "nope.json")])

    assert result.exit_code == 1
    assert result.stderr == f"error: {tmp_path / 'nope.json'}: no such file\n"


# --------------------------------------------------------------------------- logs --follow bookkeeping

def test_follow_looks_back_from_the_newest_trace_but_never_before_it_started() -> None:
    from smoltbot.cli.commands_logs import FOLLOW_LOOKBACK, _Follower

    started = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    follower = _Follower()
    assert follower.since(started) == started - FOLLOW_LOOKBACK

    old = {"trace_id": "old", "timestamp": "2026-01-01T00:00:00Z"}
    assert follower.is_new(old) and not follower.is_new(old)
    assert follower.since(started) == started - FOLLOW_LOOKBACK  # an old trace does not widen the window
    assert "old" not in follower.seen  # and is forgotten: no poll can return it again

    later = started + timedelta(minutes=10)
    assert follower.is_new({"trace_id": "new", "timestamp": later.isoformat()})
    assert follower.since(started) == later - FOLLOW_LOOKBACK
