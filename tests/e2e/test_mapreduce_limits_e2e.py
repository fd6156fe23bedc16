"""``worktree_config.resource_limits`` end to end (spec 06 §9.4): real processes, real git.

A job with ``max_disk_mb`` whose agent writes more than the limit goes to the DLQ as
``ResourceExhausted`` after that step, and its next step never runs; a job with
``max_memory_mb`` whose agent holds more resident memory than the limit is stopped at the
next sample (every 5 s) and fails the same way, while a small agent beside it succeeds.
"""

from __future__ import annotations

import sys
import time

from tests.e2e.conftest import Project
from tests.e2e.test_mapreduce_e2e import commit_all, dlq_entries, job_id_of

DISK = """\
name: disk
mode: mapreduce
worktree_config:
  resource_limits: {max_disk_mb: 1}
map:
  input: "echo '[1, 3]'"
  agent_template:
    - shell: "head -c ${item}000000 /dev/zero > blob_${item}.bin"
    - shell: "rm blob_${item}.bin && echo ${item} > ok_${item}.txt && git add ok_${item}.txt && git commit -qm ok-${item}"
"""


def test_an_agent_above_max_disk_mb_goes_to_the_dlq(project: Project) -> None:
    project.write("mr.yml", DISK)
    commit_all(project)
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    entries = dlq_entries(project, job_id_of(result.stdout))
    assert list(entries) == ["item_1"]  # 3 MB > 1 MB; 1 MB (1,000,000 bytes) fits
    failure = entries["item_1"]["failure_history"][-1]
    assert failure["error_type"] == "ResourceExhausted"
    assert "above resource_limits.max_disk_mb (1 MB)" in failure["error_message"]
    assert (project.root / "ok_1.txt").exists()
    assert not (project.root / "ok_3.txt").exists()  # its second step never ran


MEMORY = f"""\
name: memory
mode: mapreduce
worktree_config:
  resource_limits: {{max_memory_mb: 40}}
map:
  input: "echo '[\\"big\\", \\"small\\"]'"
  max_parallel: 2
  agent_template:
    - shell: "if [ ${{item}} = big ]; then {sys.executable} -c 'import time; b = bytearray(150 * 1024 * 1024); time.sleep(60)'; fi"
    - shell: "echo ${{item}} > ok_${{item}}.txt && git add ok_${{item}}.txt && git commit -qm ok-${{item}}"
"""


def test_an_agent_above_max_memory_mb_is_stopped_and_goes_to_the_dlq(project: Project) -> None:
    project.write("mr.yml", MEMORY)
    commit_all(project)
    started = time.monotonic()
    result = project.run("run", "mr.yml", "-y", timeout=120)
    assert time.monotonic() - started < 40  # stopped at a sample, not after its 60 s
    assert result.returncode == 3, result.stdout + result.stderr
    entries = dlq_entries(project, job_id_of(result.stdout))
    assert list(entries) == ["item_0"]
    failure = entries["item_0"]["failure_history"][-1]
    assert failure["error_type"] == "ResourceExhausted"
    assert "above resource_limits.max_memory_mb (40 MB)" in failure["error_message"]
    assert "resident memory" in result.stderr
    assert (project.root / "ok_small.txt").exists()
    assert not (project.root / "ok_big.txt").exists()
