"""MapReduce environment variables and item retry delays end to end (spec 11 §7, spec 05
§10.4): a real repository, real agents in worktrees, real ``sh`` processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.conftest import Project
from tests.e2e.test_mapreduce_e2e import commit_all, events, job_id_of


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


def test_agents_and_reduce_see_the_prodigy_variables(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "env-out"
    out.mkdir()
    project.write("mr.yml", f"""\
name: envs
mode: mapreduce
setup:
  - shell: "env | grep '^PRODIGY_' > {out}/setup.env"
map:
  input: "echo '[{{\\"n\\": 10}}, {{\\"n\\": 20}}, {{\\"n\\": 30}}]'"
  max_parallel: 2
  agent_template:
    - shell: "env | grep '^PRODIGY_' > {out}/agent_${{item_index}}.env && cp \\"$PRODIGY_ITEM_FILE\\" {out}/item_${{item_index}}.json && test ${{item.n}} -ne 30"
reduce:
  - shell: "env | grep '^PRODIGY_' > {out}/reduce.env && cp \\"$PRODIGY_MAP_RESULTS_FILE\\" {out}/results.json"
""")
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr  # one item failed
    job = job_id_of(result.stdout)

    setup = read_env(out / "setup.env")
    assert setup["PRODIGY_JOB_ID"] == job
    assert not [k for k in setup if k.startswith(("PRODIGY_ITEM", "PRODIGY_AGENT",
                                                  "PRODIGY_MAP"))]

    for index, n in enumerate((10, 20, 30)):
        env = read_env(out / f"agent_{index}.env")
        assert env["PRODIGY_JOB_ID"] == job
        assert env["PRODIGY_AGENT_ID"] == f"{job}_agent_{index}"
        assert env["PRODIGY_ITEM_ID"] == f"item_{index}"
        assert env["PRODIGY_ITEM_INDEX"] == str(index)
        item_file = Path(env["PRODIGY_ITEM_FILE"])
        assert item_file.is_absolute() and item_file.name == f"item_{index}.json"
        assert json.loads((out / f"item_{index}.json").read_text()) == {"n": n}
        assert env["PRODIGY_AUTOMATION"] == "true"
        assert env["PRODIGY_WORKTREE"].endswith(f"{job}_agent_{index}")
        assert not [k for k in env if k.startswith("PRODIGY_MAP")]

    reduce = read_env(out / "reduce.env")
    assert reduce["PRODIGY_JOB_ID"] == job
    assert (reduce["PRODIGY_MAP_TOTAL"], reduce["PRODIGY_MAP_SUCCESSFUL"],
            reduce["PRODIGY_MAP_FAILED"]) == ("3", "2", "1")
    assert Path(reduce["PRODIGY_MAP_RESULTS_FILE"]).name == "map-results.json"
    results = json.loads((out / "results.json").read_text())
    assert [r["item_id"] for r in results] == ["item_0", "item_1", "item_2"]
    assert not [k for k in reduce if k.startswith(("PRODIGY_ITEM", "PRODIGY_AGENT"))]


def test_a_retried_item_waits_for_its_backoff(project: Project, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # each run appends its start time; the first run of the item fails
    project.write("mr.yml", f"""\
name: retry
mode: mapreduce
error_policy:
  on_item_failure: retry
  retry_config: {{max_attempts: 3, backoff: fixed, initial_delay: 1s}}
map:
  input: "echo '[0]'"
  max_parallel: 1
  agent_template:
    - shell: "date +%s.%N >> {marks}/runs && test $(wc -l < {marks}/runs) -ge 2"
""")
    commit_all(project)
    started = time.monotonic()
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started >= 1.0
    runs = [float(x) for x in (marks / "runs").read_text().split()]
    assert len(runs) == 2
    assert runs[1] - runs[0] >= 1.0  # the second attempt waited for the delay
    job = job_id_of(result.stdout)
    retrying = [e for e in events(project, job) if e["event_type"] == "agent_retrying"]
    assert [(e["attempt"], e["backoff_ms"]) for e in retrying] == [(2, 1000)]
    assert "retrying (attempt 2) after 1s" in result.stderr
