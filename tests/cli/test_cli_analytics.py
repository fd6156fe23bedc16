"""`prodigy analytics` and `prodigy logs`, in-process, on data written through the real
storage and journal APIs: session records, event logs and stream-json transcripts
(spec 14 §4, spec 08 §1.5 and §2.15)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from prodigy_cli import cmd_logs
from prodigy_cli.main import main
from prodigy_effects.journal import JournalWriter
from prodigy_effects.storage import Storage

OLD = "2020-01-01T00:00:00.000Z"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stream(sid: str, *, tools: list[tuple[str, dict[str, Any], bool]], cost: float,
           subtype: str = "success", turns: int = 3, cwd: str = "/x",
           result: bool = True, usage: tuple[int, int, int] = (1000, 100, 0)) -> list[str]:
    """A stream-json transcript: init, tool uses and results, text, result."""
    lines = [{"type": "system", "subtype": "init", "session_id": sid, "cwd": cwd,
              "model": "claude-sonnet", "tools": ["Bash", "Edit", "Read"]}]
    for n, (name, tool_input, failed) in enumerate(tools):
        tid = f"toolu_{n}"
        lines.append({"type": "assistant", "session_id": sid, "message": {
            "content": [{"type": "tool_use", "id": tid, "name": name, "input": tool_input}],
            "usage": {"input_tokens": 10, "output_tokens": 5}}})
        lines.append({"type": "user", "timestamp": f"2025-03-14T09:00:0{n + 1}Z",
                      "message": {"content": [{
                          "type": "tool_result", "tool_use_id": tid, "is_error": failed,
                          "content": "Exit code 1\n1 failed, 12 passed" if failed else "ok"}]}})
    lines.append({"type": "assistant", "session_id": sid,
                  "message": {"content": [{"type": "text", "text": "All done."}]}})
    if result:
        lines.append({"type": "result", "subtype": subtype, "is_error": subtype != "success",
                      "num_turns": turns, "total_cost_usd": cost, "session_id": sid,
                      "duration_ms": 9000, "duration_api_ms": 7000,
                      "result": "All done." if subtype == "success" else "ran out of turns",
                      "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                                "cache_read_input_tokens": usage[2],
                                "cache_creation_input_tokens": 0}})
    return [json.dumps(x) for x in lines]


class World:
    """A PRODIGY_HOME with sessions, event logs and transcripts, and the CLI on it."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "shop"
        self.root.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=self.root, check=True)
        self.home = tmp / "home"
        self.storage = Storage(self.home)
        self.storage.ensure()
        self.claude_home = tmp / "claude"
        self.environ = dict(os.environ, PRODIGY_HOME=str(self.home),
                            CLAUDE_CONFIG_DIR=str(self.claude_home))
        self.environ.pop("PRODIGY_PROFILE", None)
        self.n = 0

    def __call__(self, *argv: str, cwd: Path | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), out=out, err=err, environ=self.environ,
                    cwd=str(cwd or self.root), stdin=io.StringIO(""))
        assert "Traceback" not in err.getvalue() and "E9001" not in err.getvalue(), err.getvalue()
        return code, out.getvalue(), err.getvalue()

    def session(self, sid: str, repo: str, **extra: Any) -> None:
        path = str(self.root) if repo == "shop" else f"/elsewhere/{repo}"
        self.storage.write_session({
            "id": sid, "session_type": extra.pop("session_type", "Workflow"),
            "status": "Completed", "started_at": OLD, "updated_at": OLD,
            "repo_name": repo, "repo_path": path,
            "workflow_data": {"workflow_name": "fix"}, **extra})

    def transcript(self, lines: list[str], name: str | None = None) -> Path:
        self.n += 1
        directory = self.storage.transcripts_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / (name or f"2025031{self.n % 10}_0900{self.n:02d}-{uuid.uuid4()}.jsonl")
        path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
        return path

    def run(self, run_id: str, repo: str, calls: list[dict[str, Any]], *,
            stamp: str | None = None, extra: list[dict[str, Any]] | None = None) -> None:
        """Write one run's event log: each call gives its claude_* events."""
        events: list[dict[str, Any]] = [{"event_type": "workflow_started",
                                         "session_id": run_id}]
        events += extra or []
        for call in calls:
            sid, step = call["sid"], call.get("step", "steps[0]")
            ctx = {"step_path": step, **({"agent_id": f"agent-{call['item']}",
                                          "item_id": call["item"], "job_id": run_id}
                                         if "item" in call else {})}
            events.append({"event_type": "claude_session_started", **ctx, "session_id": sid,
                           "model": "claude-sonnet", "tools": []})
            for name, tool_input, _failed in call.get("tools", []):
                events.append({"event_type": "claude_tool_invoked", **ctx, "session_id": run_id,
                               "tool_name": name, "tool_id": "t",
                               "parameters": json.dumps(tool_input)})
            for status in call.get("retries", []):
                events.append({"event_type": "claude_api_retry", **ctx, "session_id": run_id,
                               "attempt": 1, "max_retries": 3, "retry_delay_ms": 500,
                               "error_status": status, "error": "rate_limit"})
            uses: dict[str, int] = {}
            errors: dict[str, int] = {}
            for name, _input, failed in call.get("tools", []):
                uses[name] = uses.get(name, 0) + 1
                if failed:
                    errors[name] = errors.get(name, 0) + 1
            subtype = call.get("subtype", "success")
            path = self.transcript(stream(sid, tools=call.get("tools", []), cost=call["cost"],
                                          subtype=subtype,
                                          cwd=str(self.root) if repo == "shop" else
                                          f"/elsewhere/{repo}"))
            events.append({
                "event_type": "claude_call_completed", **ctx, "session_id": sid,
                "model": "claude-sonnet", "success": subtype == "success",
                "is_error": subtype != "success", "subtype": subtype, "exit_code": 0,
                "error_code": call.get("error_code", None if subtype == "success" else "E7003"),
                "duration_ms": call.get("ms", 10000), "duration_api_ms": 7000,
                "num_turns": 3, "cost_usd": call["cost"],
                "usage": {"input_tokens": 1000, "output_tokens": 100,
                          "cache_read_input_tokens": call.get("cache", 0),
                          "cache_creation_input_tokens": 0},
                "tool_uses": uses, "tool_errors": errors, "json_log_location": str(path)})
        events.append({"event_type": "workflow_completed", "session_id": run_id})
        moment = datetime(2020, 1, 1, tzinfo=UTC) if stamp == OLD else datetime.now(UTC)
        with JournalWriter.open(self.storage.events_dir(repo, run_id), 1, moment) as journal:
            for body in events:
                journal.append(body, correlation_id=run_id, timestamp=stamp or _now(),
                               event_id=str(uuid.uuid4()))


BASH_PYTEST = ("Bash", {"command": "pytest -q tests/test_cart.py"}, True)
BASH_GIT = ("Bash", {"command": "FOO=1 git status"}, False)
EDIT = ("Edit", {"file_path": "src/cart.py"}, True)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def full(world: World) -> Iterator[World]:
    """shop: workflow-1000 (2 calls, old), workflow-2000 (no calls), a MapReduce job of 10
    items (now); other: workflow-3000 (1 call)."""
    world.session("workflow-1000", "shop")
    world.run("workflow-1000", "shop", stamp=OLD, calls=[
        {"sid": "cs-a1", "cost": 0.10, "tools": [BASH_PYTEST, BASH_GIT, EDIT]},
        {"sid": "cs-a2", "step": "steps[1]", "cost": 0.05, "subtype": "error_max_turns",
         "retries": [429], "ms": 50000}])
    world.session("workflow-2000", "shop")
    world.run("workflow-2000", "shop", calls=[])
    world.session("session-mr", "shop", session_type="MapReduce",
                  mapreduce_data={"job_id": "mapreduce-4000", "total_items": 40})
    items = [{"sid": f"cs-i{n}", "item": f"item_{n}", "step": "agent_template[0]",
              "cost": 0.5 if n == 9 else 0.1} for n in range(10)]
    done = [{"event_type": "agent_completed", "job_id": "mapreduce-4000",
             "agent_id": f"agent-item_{n}", "item_id": f"item_{n}", "duration_ms": 60000}
            for n in range(10)]
    world.run("mapreduce-4000", "shop", calls=items, extra=[
        {"event_type": "job_started", "job_id": "mapreduce-4000", "total_items": 40,
         "config": {"max_parallel": 4}}, *done])
    world.session("workflow-3000", "other")
    world.run("workflow-3000", "other", calls=[{"sid": "cs-o1", "cost": 1.0}])
    yield world


def _json(out: str) -> Any:
    return json.loads(out)


# --------------------------------------------------------------------------- summary


def test_summary_of_the_repository(full: World) -> None:
    code, out, _ = full("analytics")
    assert code == 0
    assert "Claude analytics for repository shop" in out
    assert "Runs: 3" in out and "Claude calls: 12 (1 failed), 36 turns" in out
    assert "Cost: $1.5500" in out
    assert "Bash" in out and "item item_9" in out
    assert "Calls ran out of turns" in out and "Rate limits or overload" in out
    assert "Prompt caching is rarely used" in out and "item_9 ($0.5000)" in out


def test_summary_json_is_one_document(full: World) -> None:
    code, out, _ = full("analytics", "summary", "--json")
    doc = _json(out)
    assert code == 0
    assert doc["totals"]["claude_calls"] == 12 and doc["totals"]["runs"] == 3
    assert doc["totals"]["total_cost_usd"] == pytest.approx(1.55)
    assert doc["totals"]["api_retries"] == 1
    codes = {h["code"] for h in doc["recommendations"]}
    assert codes == {"cache", "outlier_items", "rate_limits", "max_turns"}
    assert doc["most_expensive"][0]["key"] == "item item_9"
    assert doc["slowest"][0] == {**doc["slowest"][0], "key": "steps[1]", "duration_ms": 50000}
    assert doc["tools"][0]["tool"] == "Bash" and doc["tools"][0]["uses"] == 2


def test_scope_all_repos_session_job_and_since(full: World) -> None:
    assert _json(full("analytics", "--all-repos", "--json")[1])["totals"]["claude_calls"] == 13
    doc = _json(full("analytics", "workflow-1000", "--json")[1])
    assert doc["totals"]["claude_calls"] == 2 and doc["scope"] == "session workflow-1000"
    doc = _json(full("analytics", "--session", "workflow-3000", "--json")[1])
    assert doc["totals"]["total_cost_usd"] == 1.0  # an explicit id is found in any repository
    doc = _json(full("analytics", "--job", "mapreduce-4000", "--json")[1])
    assert doc["totals"]["claude_calls"] == 10
    doc = _json(full("analytics", "--session", "session-mr", "--json")[1])
    assert doc["totals"]["claude_calls"] == 10  # the job's session
    doc = _json(full("analytics", "--since", "1d", "--json")[1])
    assert doc["totals"]["claude_calls"] == 10  # workflow-1000 is from 2020


def test_outside_a_repository_means_all_repos(full: World, tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    doc = _json(full("analytics", "--json", cwd=elsewhere)[1])
    assert doc["totals"]["claude_calls"] == 13


def test_a_session_without_claude_calls_shows_zeros(full: World) -> None:
    code, out, _ = full("analytics", "workflow-2000")
    assert code == 0 and "Claude calls: 0 (0 failed)" in out and "Cost: $0.0000" in out
    assert "No Claude calls found." in out
    doc = _json(full("analytics", "--session", "workflow-2000", "--json")[1])
    assert doc["totals"]["claude_calls"] == 0 and doc["recommendations"] == []


def test_a_session_record_without_events_shows_zeros(world: World) -> None:
    world.session("workflow-9", "shop")
    code, out, _ = world("analytics", "workflow-9")
    assert code == 0 and "Claude calls: 0" in out


def test_unknown_session_or_job_is_exit_2(full: World) -> None:
    code, out, err = full("analytics", "--session", "workflow-404")
    assert code == 2 and "E5005" in err and "workflow-404" in err and out == ""
    code, _, err = full("analytics", "cost", "--job", "mapreduce-404")
    assert code == 2 and "mapreduce-404" in err
    code, _, err = full("analytics", "cost", "workflow-1000", "--session", "workflow-2000")
    assert code == 2


def test_empty_storage(world: World) -> None:
    code, out, _ = world("analytics")
    assert code == 0 and "Claude calls: 0" in out and "No Claude calls found." in out
    for action in ("tools", "sessions"):
        code, out, _ = world("analytics", action)
        assert code == 0 and "No " in out
    code, out, _ = world("analytics", "cost")
    assert code == 0 and "No Claude calls found." in out
    assert _json(world("analytics", "export")[1]) == []
    assert _json(world("analytics", "sessions", "--json")[1]) == []


# --------------------------------------------------------------------------- cost


def test_cost_by_each_key(full: World) -> None:
    code, out, _ = full("analytics", "cost")
    assert code == 0 and "session-mr" in out and "workflow-1000" in out
    assert "workflow-3000" not in out and "TOTAL" in out and "$1.5500" in out
    rows = _json(full("analytics", "cost", "--by", "step", "--json")[1])["rows"]
    assert {(r["key"], r["scope"]) for r in rows} == {
        ("agent_template[0]", "mapreduce-4000"), ("steps[0]", "workflow-1000"),
        ("steps[1]", "workflow-1000")}
    rows = _json(full("analytics", "cost", "--by", "item", "--job", "mapreduce-4000",
                      "--json")[1])["rows"]
    assert len(rows) == 10 and rows[0] == {**rows[0], "key": "item_9", "cost_usd": 0.5}
    rows = _json(full("analytics", "cost", "--by", "model", "--json")[1])["rows"]
    assert [r["key"] for r in rows] == ["claude-sonnet"] and rows[0]["calls"] == 12
    rows = _json(full("analytics", "cost", "--by", "day", "--json")[1])["rows"]
    assert rows[0]["key"] == "2020-01-01" and len(rows) == 2
    rows = _json(full("analytics", "cost", "--by", "job", "--json")[1])["rows"]
    assert rows[0]["key"] == "mapreduce-4000"


def test_cost_projection_for_a_job(full: World) -> None:
    code, out, _ = full("analytics", "cost", "--job", "mapreduce-4000", "--project")
    assert code == 0
    assert "30 items remaining after 10 finished" in out
    assert "Remaining cost: $3.0000" in out and "Remaining time: 8m 0s" in out
    doc = _json(full("analytics", "cost", "--job", "mapreduce-4000", "--project", "--json")[1])
    projection = doc["projection"]
    assert projection["remaining_cost_usd"] == pytest.approx(3.0)
    assert projection["remaining_cost_high_usd"] > 3.0
    assert projection["remaining_time_ms"] == 8 * 60000
    code, _, err = full("analytics", "cost", "--project")
    assert code == 2 and "--job" in err
    code, out, _ = full("analytics", "cost", "--job", "workflow-1000", "--project")
    assert code == 0 and "Projection: not available" in out


# --------------------------------------------------------------------------- tools, sessions


def test_tools(full: World) -> None:
    code, out, _ = full("analytics", "tools", "workflow-1000")
    assert code == 0
    assert "Bash  2     1       50%" in out and "Edit  1     1       100%" in out
    assert "pytest" in out and "git" in out and "FOO=1" not in out
    doc = _json(full("analytics", "tools", "--json")[1])
    bash = next(t for t in doc["tools"] if t["tool"] == "Bash")
    assert bash["error_rate"] == 0.5
    assert {c["command"] for c in bash["top_commands"]} == {"pytest", "git"}


def test_sessions_lists_calls_with_transcripts_and_claude_logs(full: World) -> None:
    log = full.claude_home / "projects" / "-shop" / "cs-a1.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("{}\n")
    code, out, _ = full("analytics", "sessions")
    assert code == 0 and "cs-a1" in out and "error_max_turns" in out
    assert "item item_3" in out and str(log) in out
    docs = _json(full("analytics", "sessions", "--json")[1])
    assert len(docs) == 12
    first = next(d for d in docs if d["claude_session_id"] == "cs-a1")
    assert first["claude_log"] == str(log) and Path(first["transcript"]).is_file()
    assert len(_json(full("analytics", "sessions", "--limit", "3", "--json")[1])) == 3


# --------------------------------------------------------------------------- export


def test_export_json_and_csv(full: World, tmp_path: Path) -> None:
    docs = _json(full("analytics", "export", "workflow-1000")[1])
    assert [d["session_id"] for d in docs] == ["cs-a1", "cs-a2"]
    second = docs[1]
    assert second["api_retries"] == {"count": 1, "statuses": [429]}
    assert second["subtype"] == "error_max_turns" and second["partial"] is False
    assert docs[0]["tool_uses"] == {"Bash": 2, "Edit": 1}
    assert docs[0]["tool_errors"] == {"Bash": 1, "Edit": 1}
    assert docs[0]["usage"]["input_tokens"] == 1000
    code, out, _ = full("analytics", "export", "--format", "csv", "--output", "calls.csv")
    assert code == 0 and "Wrote 12 records" in out
    text = (full.root / "calls.csv").read_text()
    assert text.splitlines()[0].startswith("timestamp,repo,run_id")
    assert len(text.splitlines()) == 13


# --------------------------------------------------------------------------- replay


def test_replay_by_claude_session_id(full: World) -> None:
    code, out, _ = full("analytics", "replay", "cs-a1")
    assert code == 0
    lines = [x for x in out.splitlines() if x.startswith("#")]
    assert lines[0].startswith("#1") and "⚙ init  model=claude-sonnet  tools=3" in lines[0]
    assert "🔧 Bash: pytest -q tests/test_cart.py" in lines[1]
    assert "↳ error (exit 1): 1 failed, 12 passed" in lines[2]
    assert "[00:01]" in lines[4]  # time since the first timestamp
    assert "💬 All done." in out
    assert lines[-1].endswith("✅ result: success, 3 turns, $0.1000")


def test_replay_other_refs_and_windows(full: World) -> None:
    path = Path(_json(full("analytics", "sessions", "--json", "workflow-1000")[1])[0]
                ["transcript"])
    for ref in (path.name, path.stem, str(path)):
        code, out, _ = full("analytics", "replay", ref)
        assert code == 0 and "❌ result: error_max_turns" in out, ref
    code, out, _ = full("analytics", "replay", "--session", "workflow-1000", "--step",
                        "steps[0]", "--from", "2", "--limit", "2")
    entries = [x for x in out.splitlines() if x.startswith("#")]
    assert code == 0 and [e.split()[0] for e in entries] == ["#2", "#3"]
    doc = _json(full("analytics", "replay", "cs-a1", "--json")[1])
    assert doc["claude_session_id"] == "cs-a1" and len(doc["entries"]) == 9


def test_replay_errors(full: World) -> None:
    code, _, err = full("analytics", "replay", "no-such-call")
    assert code == 2 and "no Claude transcript matches" in err
    code, _, err = full("analytics", "replay")
    assert code == 2 and "replay needs" in err
    code, _, err = full("analytics", "replay", "cs-a1", "--interactive")
    assert code == 2 and "not available yet" in err
    code, _, err = full("analytics", "replay", "--session", "workflow-1000", "--step", "x[9]")
    assert code == 2


# --------------------------------------------------------------------------- logs


def test_logs_lists_the_repository_transcripts(full: World) -> None:
    stray = full.transcript(stream("cs-running", tools=[], cost=0, result=False,
                                   cwd=str(full.root)))
    full.transcript(stream("cs-foreign", tools=[], cost=0, cwd="/some/other/repo"))
    code, out, _ = full("logs")
    assert code == 0 and out.startswith("TIME")
    rows = out.splitlines()[1:]
    assert len(rows) == 13  # 12 journaled calls of shop + the running one
    assert any(str(stray) in r and "unfinished" in r for r in rows)
    assert "cs-foreign" not in out and "workflow-3000" not in out
    docs = _json(full("logs", "--json", "--limit", "0")[1])
    assert len(docs) == 13 and {"time", "session_id", "step", "outcome", "cost_usd",
                                "path"} <= set(docs[0])
    assert len(_json(full("logs", "--all-repos", "--json", "--limit", "0")[1])) == 15
    assert len(_json(full("logs", "--json", "--limit", "5")[1])) == 5
    docs = _json(full("logs", "--job-id", "workflow-1000", "--json")[1])
    assert {d["claude_session_id"] for d in docs} == {"cs-a1", "cs-a2"}


def test_logs_shows_one_transcript_summarised(full: World) -> None:
    code, out, _ = full("logs", "cs-a1")
    assert code == 0
    assert "🔧 Bash: pytest -q tests/test_cart.py" in out and "🔧 Edit: src/cart.py" in out
    assert "💬 All done." in out and "✅ done in 3 turns, $0.1000" in out
    code, out, _ = full("logs", "workflow-1000")  # a Prodigy session: all its transcripts
    assert code == 0 and out.count("── ") == 2 and "❌ error_max_turns: ran out of turns" in out
    path = Path(_json(full("logs", "--json", "--job-id", "workflow-1000")[1])[0]["path"])
    code, out, _ = full("logs", path.name)
    assert code == 0 and path.name in out
    code, out, _ = full("logs", "cs-i3")
    assert "[item_3] 🔧" not in out and "[item_3] ✅ done in 3 turns" in out
    doc = _json(full("logs", "cs-a1", "--json")[1])
    assert doc[0]["record"]["session_id"] == "cs-a1" and doc[0]["lines"][0].startswith("🔧")


def test_logs_latest_and_summary(full: World) -> None:
    latest = full.transcript(stream("cs-last", tools=[BASH_GIT], cost=0.2, cwd=str(full.root)),
                             name="20991231_235959-latest.jsonl")
    code, out, _ = full("logs", "--latest")
    assert code == 0 and latest.name in out and "🔧 Bash: FOO=1 git status" in out
    code, out, _ = full("logs", "--latest", "--summary")
    assert code == 0 and "Claude session:  cs-last" in out and "Cost:            $0.2000" in out
    assert "Tools:           Bash 1" in out
    doc = _json(full("logs", "cs-a2", "--summary", "--json")[1])
    assert doc["api_retries"]["statuses"] == [429] and doc["subtype"] == "error_max_turns"


def test_logs_summary_of_a_partial_transcript(world: World) -> None:
    world.transcript(stream("cs-killed", tools=[BASH_GIT], cost=0, result=False,
                            cwd=str(world.root)))
    doc = _json(world("logs", "cs-killed", "--summary", "--json")[1])
    assert doc["partial"] is True and doc["cost_usd"] == 0
    assert doc["usage"]["input_tokens"] == 10 and doc["num_turns"] == 2


def test_logs_unknown_ids(full: World) -> None:
    code, out, err = full("logs", "nope")
    assert code == 2 and "no Claude transcript matches 'nope'" in err and out == ""
    code, _, err = full("logs", "--job-id", "mapreduce-404")
    assert code == 2 and "mapreduce-404" in err
    code, out, _ = full("logs", "workflow-2000")
    assert code == 0 and "made no Claude calls" in out


def test_logs_with_no_transcripts(world: World) -> None:
    code, out, _ = world("logs")
    assert code == 0 and out == "No Claude transcripts found.\n"
    assert _json(world("logs", "--json")[1]) == []
    code, _, err = world("logs", "--latest")
    assert code == 2 and "no Claude transcripts" in err


def test_logs_tail_follows_until_the_result(world: World,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmd_logs, "POLL_SECONDS", 0.02)
    lines = stream("cs-live", tools=[BASH_GIT], cost=0.3, cwd=str(world.root))
    path = world.transcript(lines[:1])

    def grow() -> None:
        for line in lines[1:]:
            time.sleep(0.05)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")

    writer = threading.Thread(target=grow)
    writer.start()
    code, out, _ = world("logs", "--latest", "--tail")
    writer.join()
    assert code == 0
    assert out.index("🔧 Bash: FOO=1 git status") < out.index("✅ done in 3 turns, $0.3000")


def test_logs_tail_stops_on_ctrl_c(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.transcript(stream("cs-hung", tools=[BASH_GIT], cost=0, result=False,
                            cwd=str(world.root)))

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_logs.time, "sleep", interrupt)
    code, out, _ = world("logs", "cs-hung", "--tail")
    assert code == 0 and "🔧 Bash: FOO=1 git status" in out
