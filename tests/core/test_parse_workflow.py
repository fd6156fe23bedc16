"""Validation of workflow files: spec 01 §9 and spec 02 §16 acceptance examples."""

from __future__ import annotations

from tests.core._parse_helpers import codes, load, only

MAPREDUCE = """\
name: mr
mode: mapreduce
map:
  input: items.json
  agent_template:
    - shell: "echo ${item}"
"""


def test_steps_form_is_standard() -> None:  # 01 §9 #1
    outcome = load('steps: [{shell: "echo hi"}]\n')
    assert outcome.problems == ()
    assert outcome.workflow is not None
    assert outcome.workflow.mode == "standard"
    assert outcome.workflow.steps[0].command == "echo hi"
    assert outcome.workflow.steps[0].source == "$.steps[0]"
    assert outcome.workflow.name == "wf"


def test_commands_and_steps_conflict() -> None:  # 01 §9 #2
    outcome = load("commands:\n  - shell: a\nsteps:\n  - shell: b\n")
    problem = only(outcome, "E1017")
    assert (problem.line, problem.column) == (3, 1)
    assert codes(outcome) == ["E1017"]
    assert outcome.workflow is None


def test_quoted_mode_mapreduce() -> None:  # 01 §9 #3
    outcome = load(MAPREDUCE.replace("mode: mapreduce", "mode: 'mapreduce'"))
    assert outcome.problems == ()
    assert outcome.workflow is not None and outcome.workflow.mode == "mapreduce"
    assert outcome.workflow.map is not None
    assert outcome.workflow.map.agent_template[0].source == "$.map.agent_template[0]"


def test_mode_text_in_a_string_does_not_matter() -> None:  # 01 §9 #4
    outcome = load('commands:\n  - shell: "echo mode: mapreduce"\n# mode: mapreduce\n')
    assert outcome.workflow is not None and outcome.workflow.mode == "standard"


def test_map_without_mode() -> None:  # 01 §9 #5
    outcome = load("map:\n  input: x.json\n  agent_template: []\n")
    problem = only(outcome, "E1002")
    assert problem.help == "add `mode: mapreduce`"
    assert outcome.workflow is None


def test_mapreduce_with_commands() -> None:
    outcome = load(MAPREDUCE + "commands: []\n")
    assert only(outcome, "E1002").help == "a mapreduce workflow uses `setup`, `map` and `reduce`"


def test_invalid_mode() -> None:
    outcome = load("mode: parallel\nsteps: []\n")
    assert "standard, mapreduce" in only(outcome, "E1005").message


def test_unknown_key_with_suggestion() -> None:  # 01 §9 #6
    outcome = load('steps:\n  - shell: "x"\n    retry_config: {attempts: 2}\n')
    problem = only(outcome, "W1001")
    assert problem.severity == "warning"
    assert "did you mean 'retry'?" in problem.message
    assert problem.suggestion == "retry"
    assert problem.path == "$.steps[0].retry_config"
    assert (problem.file, problem.line, problem.column) == ("wf.yml", 3, 5)
    assert outcome.workflow is not None
    assert outcome.workflow.steps[0].retry is None


def test_strict_turns_warnings_into_errors() -> None:  # 01 §9 #7
    outcome = load('steps:\n  - shell: "x"\n    retry_config: {attempts: 2}\n', strict=True)
    assert [p.severity for p in outcome.problems] == ["error"]
    assert outcome.workflow is None


def test_similar_key_and_no_suggestion() -> None:
    outcome = load("steps:\n  - shell: x\n    captur: y\n    zzzzzz: 1\n")
    by_key = {p.path: p for p in outcome.problems}
    assert by_key["$.steps[0].captur"].suggestion == "capture"
    unknown = by_key["$.steps[0].zzzzzz"]
    assert unknown.suggestion is None
    assert unknown.help is not None and "valid keys here" in unknown.help


def test_all_problems_in_line_order() -> None:  # 01 §9 #8
    text = (
        "steps:\n"
        "  - shell: a\n"
        "    timeout: forever\n"  # line 3: E1011
        "  - shell: b\n"
        "  - shell: c\n"
        "  - shell: d\n"
        "  - shell: e\n"
        "    capture_format: xml\n"  # line 8: E1005
        + "  - shell: f\n" * 11
        + "  - {}\n"  # line 20: E1007
    )
    outcome = load(text)
    assert [(p.code, p.line) for p in outcome.problems] == [
        ("E1011", 3),
        ("E1005", 8),
        ("E1007", 20),
    ]


def test_mapreduce_missing_name_and_input() -> None:  # 01 §9 #9
    outcome = load("mode: mapreduce\nmap:\n  agent_template:\n    - shell: x\n")
    paths = sorted(p.path for p in outcome.problems if p.code == "E1003")
    assert paths == ["$.map.input", "$.name"]


def test_yes_is_a_string() -> None:  # 01 §9 #10
    outcome = load("env: {ENABLED: yes}\nsteps: [{shell: x}]\n")
    assert outcome.workflow is not None
    (name, value), = outcome.workflow.env
    assert name == "ENABLED" and getattr(value, "value", None) == "yes"


def test_max_parallel_reference_resolves() -> None:  # 01 §9 #11
    text = MAPREDUCE.replace("map:\n", 'env: {WORKERS: "3"}\nmap:\n  max_parallel: "${WORKERS}"\n')
    outcome = load(text)
    assert outcome.problems == ()
    assert outcome.workflow is not None and outcome.workflow.map is not None
    assert outcome.workflow.map.max_parallel == 3


def test_max_parallel_reference_from_profile_and_environ() -> None:
    text = MAPREDUCE.replace(
        "map:\n", "profiles: {big: {WORKERS: 9}}\nmap:\n  max_parallel: $WORKERS\n  max_items: ${LIMIT}\n"
    )
    outcome = load(text, profile="big", environ={"LIMIT": "5"})
    assert outcome.problems == ()
    assert outcome.workflow is not None and outcome.workflow.map is not None
    assert (outcome.workflow.map.max_parallel, outcome.workflow.map.max_items) == (9, 5)


def test_unresolved_reference_is_e2002() -> None:  # 01 §9 #12
    outcome = load(MAPREDUCE.replace("map:\n", 'map:\n  max_parallel: "${NOPE}"\n'))
    problem = only(outcome, "E2002")
    assert "'NOPE'" in problem.message
    assert problem.path == "$.map.max_parallel"


def test_reference_to_a_non_number_is_e2002() -> None:
    text = MAPREDUCE.replace("map:\n", "env: {W: lots}\nmap:\n  max_parallel: ${W}\n")
    assert "max_parallel" in only(load(text), "E2002").message


def test_x_keys_and_merge_keys() -> None:  # 01 §9 #13
    outcome = load("x-common: &c {timeout: 5}\nsteps:\n  - shell: x\n    <<: *c\n")
    assert outcome.problems == ()
    assert outcome.workflow is not None and outcome.workflow.steps[0].timeout == 5.0


def test_bare_string_step() -> None:  # 01 §9 #14
    outcome = load("- prodigy-lint\n")
    problem = only(outcome, "W1002")
    assert problem.path == "$[0]"
    assert outcome.workflow is not None
    step = outcome.workflow.steps[0]
    assert (step.kind, step.command, step.commit_required) == ("claude", "/prodigy-lint", True)


def test_filter_syntax_warning() -> None:  # 01 §9 #15
    outcome = load('- shell: "echo ${x|default:none}"\n')
    problem = only(outcome, "W1003")
    assert (problem.line, problem.column) == (1, 16)
    assert outcome.workflow is not None
    assert outcome.workflow.steps[0].command == "echo ${x|default:none}"


def test_unterminated_reference_is_e1012() -> None:
    outcome = load('- shell: "echo ${x"\n')
    assert only(outcome, "E1012").path == "$[0].shell"


def test_two_command_keys() -> None:  # 02 §16 #3
    outcome = load('- {shell: "echo hi", claude: "/x"}\n')
    problem = only(outcome, "E1008")
    assert "shell, claude" in problem.message
    assert problem.path == "$[0]"


def test_write_file_traversal() -> None:  # 02 §16 #11
    outcome = load('- write_file: {path: "../x", content: "a"}\n')
    problem = only(outcome, "E1004")
    assert problem.path == "$[0].write_file.path"
    assert only(load('- write_file: {path: "/etc/x", content: "a"}\n'), "E1004")
    ok = load('- write_file: {path: "out/${item}.json", content: "a", mode: "0600"}\n')
    assert ok.workflow is not None


def test_top_level_scalar() -> None:
    assert only(load("just text\n"), "E1002")


def test_standard_needs_steps() -> None:
    assert "commands:" in only(load("name: x\n"), "E1003").message


def test_composition_is_reported_honestly() -> None:
    outcome = load("extends: base.yml\nimports: [a.yml]\n")
    assert codes(outcome) == ["E1016", "E1016"]
    assert "not supported yet" in outcome.problems[0].message


def test_not_yet_step_kinds() -> None:
    outcome = load("- workflow: sub\n")
    assert codes(outcome) == ["E1016"]
    assert "`workflow` steps are not implemented yet" in outcome.problems[0].message


def test_goal_seek_and_foreach_steps_parse() -> None:
    outcome = load(
        "- goal_seek: {goal: g, command: '/fix', validate: 'echo 1', threshold: 80,"
        " max_attempts: 3, validator: json, timeout_seconds: 5m, fail_on_incomplete: true}\n"
        "- foreach: {items: [a, {f: 1}], do: [{shell: 'echo ${item}'}, {shell: 'echo ${index}'}],"
        " parallel: true, max_items: 1, continue_on_error: true}\n"
        "- foreach: {foreach: 'ls', do: [{shell: x}], parallel: 3}\n")
    assert codes(outcome) == []
    goal, each, command = outcome.workflow.steps
    assert goal.kind == "goal_seek" and goal.goal_seek is not None
    assert goal.goal_seek.command.kind == "claude" and goal.goal_seek.command.command == "/fix"
    assert (goal.goal_seek.validator, goal.goal_seek.threshold, goal.goal_seek.max_attempts,
            goal.goal_seek.timeout_seconds, goal.goal_seek.fail_on_incomplete) == \
        ("json", 80.0, 3, 300.0, True)
    assert each.foreach is not None and each.foreach.items_json == '["a", {"f": 1}]'
    assert (each.foreach.parallel, each.foreach.max_items, each.foreach.continue_on_error) == \
        (10, 1, True)
    assert [s.kind for s in each.foreach.do] == ["shell", "shell"]
    assert command.foreach is not None and command.foreach.source == "ls"
    assert command.foreach.parallel == 3


def test_goal_seek_and_foreach_bad_input() -> None:
    outcome = load(
        "- goal_seek: {goal: g, shell: a, claude: b, threshold: 120, max_attempts: 0}\n"
        "- goal_seek: {shell: a}\n"
        "- foreach: {do: []}\n"
        "- foreach: {foreach: 3, do: [{shell: x, commit_required: true}], parallel: 2}\n")
    found = [(p.code, p.path) for p in outcome.problems]
    assert ("E1008", "$[0].goal_seek") in found
    assert ("E1005", "$[0].goal_seek.threshold") in found
    assert ("E1005", "$[0].goal_seek.max_attempts") in found
    assert [c for c, p in found if p == "$[1].goal_seek"] == ["E1003"] * 4
    assert ("E1003", "$[2].foreach") in found and ("E1005", "$[2].foreach.do") in found
    assert ("E1004", "$[3].foreach.foreach") in found
    assert ("W1009", "$[3].foreach.do[0].commit_required") in found


def test_analyze_and_handler_are_unsupported() -> None:
    outcome = load("- analyze: {max_cache_age: 300}\n- handler: {name: x}\n")
    assert codes(outcome) == ["E1016", "E1016"]
    assert outcome.problems[0].help is not None


def test_no_command_key() -> None:
    assert only(load("- {timeout: 5}\n"), "E1007").path == "$[0]"


def test_reserved_capture_and_duplicate_ids() -> None:
    text = "- {shell: a, capture: item}\n- {shell: b, id: s}\n- {shell: c, id: s}\n- {shell: d, capture: shell.output}\n"
    outcome = load(text)
    assert sorted(codes(outcome)) == ["E1004", "E1005"]
    assert only(outcome, "E1004").path == "$[2].id"


def test_outputs_need_id() -> None:
    outcome = load("- {shell: a, outputs: {f: {file_pattern: '*.md'}}}\n")
    assert only(outcome, "E1003").path == "$[0].outputs"


def test_on_failure_forms() -> None:
    text = (
        "- shell: a\n  on_failure: true\n"
        "- shell: b\n  on_failure: \"/fix ${shell.output}\"\n"
        "- shell: c\n  on_failure: [\"echo x\", {claude: /y, timeout: 300}]\n"
        "- shell: d\n  on_failure: {shell: echo, max_retries: 2, fail_workflow: false}\n"
        "- shell: e\n  on_failure: {strategy: cleanup, commands: [\"claude: /z\", \"shell: rm x\"]}\n"
    )
    outcome = load(text)
    assert outcome.problems == ()
    assert outcome.workflow is not None
    steps = outcome.workflow.steps
    assert steps[0].on_failure is not None and steps[0].on_failure.allow
    b = steps[1].on_failure
    assert b is not None and b.commands[0].kind == "claude"
    c = steps[2].on_failure
    assert c is not None and [s.kind for s in c.commands] == ["shell", "claude"]
    assert c.commands[1].timeout == 300
    d = steps[3].on_failure
    assert d is not None and d.max_attempts == 3 and d.fail_workflow is False
    e = steps[4].on_failure
    assert e is not None and [(s.kind, s.command) for s in e.commands] == [("claude", "/z"), ("shell", "rm x")]


def test_on_failure_conflicts_and_missing_commands() -> None:
    outcome = load("- shell: a\n  on_failure: {commands: [x], claude: /y}\n- shell: b\n  on_failure: {max_attempts: 2}\n")
    assert sorted(codes(outcome)) == ["E1003", "E1008"]


def test_fix_loop_strategy_warning() -> None:
    outcome = load("- shell: a\n  on_failure: {claude: /fix, max_attempts: 3, strategy: cleanup}\n")
    assert only(outcome, "W1012").path == "$[0].on_failure.strategy"


def test_handler_paths_and_depth() -> None:
    nested = "[{shell: h, on_failure: " * 6 + "x" + "}]" * 6
    outcome = load(f"- shell: a\n  on_failure: {nested}\n")
    assert "E1004" in codes(outcome)
    deep = next(p for p in outcome.problems if p.code == "E1004")
    assert "nested" in deep.message
    outcome = load("steps:\n  - shell: a\n    on_failure:\n      commands:\n        - shell: x\n        - shel: y\n")
    problem = only(outcome, "E1007")
    assert problem.path == "$.steps[0].on_failure.commands[1]"


def test_legacy_forms() -> None:
    text = (
        "- name: prodigy-review\n  args: [src/, --deep]\n  commit_required: false\n"
        "- test: {command: npm test, on_failure: {claude: /fix, max_attempts: 3}}\n"
        "- shell: x\n  capture: out\n  capture_streams: both\n  temporary: true\n"
    )
    outcome = load(text)
    assert set(codes(outcome)) == {"W1002"}
    assert outcome.workflow is not None
    review, test, streams = outcome.workflow.steps
    assert (review.kind, review.command) == ("claude", "/prodigy-review src/ --deep")
    assert test.kind == "shell" and test.legacy_test and test.on_failure is not None
    assert test.on_failure.max_attempts == 3
    assert streams.capture_streams.stderr and streams.capture_streams.stdout


def test_agent_template_commands_form() -> None:
    text = MAPREDUCE.replace("  agent_template:\n    - shell", "  agent_template:\n    commands:\n      - shell")
    outcome = load(text)
    assert codes(outcome) == ["W1002"]
    assert outcome.workflow is not None and outcome.workflow.map is not None
    assert outcome.workflow.map.agent_template[0].source == "$.map.agent_template.commands[0]"


def test_booleans_as_strings() -> None:
    outcome = load('- {shell: a, allow_failure: "true"}\n')
    assert only(outcome, "W1007").path == "$[0].allow_failure"
    assert outcome.workflow is not None and outcome.workflow.steps[0].allow_failure


def test_durations() -> None:
    text = "".join(
        f"- {{shell: a, timeout: {v}}}\n" for v in ['"500ms"', '"90s"', '"5m"', '"1h 30m"', '"30"', "12"]
    )
    outcome = load(text)
    assert outcome.problems == ()
    assert outcome.workflow is not None
    assert [s.timeout for s in outcome.workflow.steps] == [0.5, 90, 300, 5400, 30, 12]
    assert only(load('- {shell: a, timeout: "5 minutes"}\n'), "E1011")
    assert only(load("- {shell: a, timeout: -1}\n"), "E1011")


def test_retry_config() -> None:
    text = (
        "- shell: a\n  retry:\n    attempts: 5\n    backoff: {exponential: {base: 3}}\n"
        "    initial_delay: 2s\n    max_delay: {secs: 60, nanos: 0}\n"
        "    retry_on: [network, {exit_code: [75]}, {pattern: 'x+'}]\n"
        "    on_failure: {fallback: {command: echo fb}}\n"
    )
    outcome = load(text)
    assert codes(outcome) == ["W1002"]  # {secs, nanos}
    assert outcome.workflow is not None
    retry = outcome.workflow.steps[0].retry
    assert retry is not None
    assert (retry.attempts, retry.backoff.kind, retry.backoff.base, retry.max_delay) == (5, "exponential", 3.0, 60.0)
    assert retry.exhausted == "fallback" and retry.fallback_command == "echo fb"
    bad = load("- shell: a\n  retry: {attempts: 0, retry_on: [weather, {pattern: '('}], backoff: wavy}\n")
    assert sorted(codes(bad)) == ["E1005", "E1005", "E1005", "E1009"]


def test_expressions_are_checked() -> None:
    outcome = load('- shell: a\n  when: "coverage > 80"\n')
    problem = only(outcome, "E1009")
    assert problem.path == "$[0].when"
    text = MAPREDUCE.replace(
        "map:\n", "map:\n  filter: 'a == '\n  sort_by: 'x SIDEWAYS'\n  json_path: '$.items[?'\n"
    )
    outcome = load(text)
    assert sorted(codes(outcome)) == ["E1009", "E1009", "E1010"]


def test_mapreduce_numbers_and_policy() -> None:
    text = MAPREDUCE.replace("map:\n", "on_item_failure: skip\nerror_policy: {on_item_failure: retry, failure_threshold: 2}\nmap:\n  max_parallel: 0\n")
    outcome = load(text)
    assert sorted(codes(outcome)) == ["E1005", "E1005", "W1006"]
    high = load(MAPREDUCE.replace("map:\n", "map:\n  max_parallel: 100\n"))
    assert codes(high) == ["W1008"]


def test_setup_capture_outputs() -> None:
    text = MAPREDUCE.replace(
        "map:\n",
        "setup:\n  commands:\n    - shell: git rev-parse HEAD\n  capture_outputs:\n"
        "    SHA: 0\n    COUNT: {command_index: 3}\n    item: 0\nmap:\n",
    )
    outcome = load(text)
    by_path = {p.path: p.code for p in outcome.problems}
    assert by_path == {"$.setup.capture_outputs.COUNT.command_index": "E1005", "$.setup.capture_outputs.item": "E1005"}


def test_phase_variables_w1004() -> None:
    text = (
        "name: mr\nmode: mapreduce\n"
        "setup:\n  - shell: echo ${item.path} $item\n"
        "map:\n  input: x.json\n  agent_template:\n    - shell: echo ${map.total} ${item} ${merge.source_branch}\n"
        "reduce:\n  - shell: echo ${map.total} ${item_index}\n"
        "merge:\n  - shell: echo ${merge.source_branch} ${map.results}\n"
    )
    outcome = load(text)
    found = sorted((p.path, p.message.split("'")[1]) for p in outcome.problems if p.code == "W1004")
    assert found == [
        ("$.map.agent_template[0].shell", "map.total"),
        ("$.map.agent_template[0].shell", "merge.source_branch"),
        ("$.merge[0].shell", "map.results"),
        ("$.reduce[0].shell", "item_index"),
        ("$.setup[0].shell", "item.path"),
    ]
    assert all(p.severity == "warning" for p in outcome.problems)
    strict = load(text.replace("mode: mapreduce\n", "mode: mapreduce\nstrict_variables: true\n"))
    assert strict.workflow is None


def test_env_forms_secrets_profiles() -> None:
    text = (
        "env:\n  A: x\n  N: 8080\n  U: null\n  D: {command: nproc, cache: true}\n"
        "  C: {condition: \"${A} == 'x'\", when_true: a, when_false: b}\n"
        "  S: {value: hush, secret: true}\n  P: {default: dev, prod: live}\n"
        "secrets:\n  T1: MY_TOKEN\n  T2: \"${env:OTHER}\"\n  T3: {provider: file, key: .secret}\n"
        "env_files: [.env, {path: .env.local, required: true}]\n"
        "profiles:\n  prod:\n    description: production\n    A: y\n"
        "steps: [{shell: x}]\n"
    )
    outcome = load(text, profile="prod")
    assert outcome.problems == ()
    assert outcome.workflow is not None
    assert [n for n, _ in outcome.workflow.env] == ["A", "N", "U", "D", "C", "S", "P"]
    assert outcome.workflow.profiles[0].description == "production"
    bad = load("secrets: {V: {provider: vault, key: x}}\nsteps: [{shell: x}]\n", profile="nope")
    assert sorted(codes(bad)) == ["E1013", "E1016"]


def test_unknown_profile_lists_defined() -> None:
    outcome = load("profiles: {prod: {A: b}}\nsteps: [{shell: x}]\n", profile="nope")
    assert "prod" in only(outcome, "E1013").message


def test_workflow_level_settings() -> None:
    text = (
        "merge_conflicts: {strategy: claude, timeout: 15m}\n"
        "worktree_config: {parallel_worktrees: 8, allocation_strategy: pooled, cleanup_policy: {keep_failed: true}}\n"
        "claude_config: {model: sonnet, permission_args: [--x]}\n"
        "merge: {commands: [{shell: 'echo ${merge.target_branch}'}], timeout: 900}\n"
        "retry_defaults: {attempts: 2, initial_delay: 0}\n"
        "steps: [{shell: x}]\n"
    )
    outcome = load(text)
    assert outcome.problems == ()
    assert outcome.workflow is not None
    assert outcome.workflow.merge is not None and outcome.workflow.merge.timeout == 900
    assert dict(outcome.workflow.extra).keys() == {"merge_conflicts", "claude_config"}
    pool = outcome.workflow.worktree_config
    assert pool is not None and pool.parallel_worktrees == 8
    assert pool.allocation_strategy == "pooled" and pool.cleanup_policy.keep_failed


def test_mapreduce_keys_in_standard_workflow() -> None:
    outcome = load("max_failures: 3\nsteps: [{shell: x}]\n")
    assert only(outcome, "W1001").help == "this key is only valid in mapreduce workflows"


def test_foreach_bad_parallel_is_an_error_not_a_crash() -> None:
    for value in ("0", "-1", "2.5", "'3'", "null"):
        outcome = load(f"- foreach: {{foreach: [1], parallel: {value}, do: [{{shell: x}}]}}\n")
        assert [p.path for p in outcome.problems if p.is_error] == ["$[0].foreach.parallel"], \
            value
