"""Profiles and env files end to end (spec 11 §1, §4, §5): the layers a real child process
sees, `--profile`, `PRODIGY_PROFILE`, and the errors for a missing profile or env file."""

from __future__ import annotations

from tests.e2e.conftest import Project

WORKFLOW = """\
name: layered
env_files:
  - .env
  - {path: .env.local, required: false}
env:
  APP_ENV: staging
  API_URL: "https://${APP_ENV}.example.com"
  REGION:
    default: eu
    prod: us
profiles:
  prod:
    description: "production settings"
    APP_ENV: prod
    FROM_PROFILE: "yes"
steps:
  - shell: "echo $APP_ENV $API_URL $REGION ${FROM_PROFILE:-none} $FROM_FILE $QUOTED p=$PRODIGY_PROFILE ${workflow.profile:-none} > seen"
  - shell: "git add seen && git commit -qm seen --allow-empty"
"""


def seen(project: Project) -> str:
    return (project.root / "seen").read_text().strip()


def test_env_file_layers_and_profiles(project: Project) -> None:
    project.write("wf.yml", WORKFLOW)
    project.commit()
    # env files are read from the repository root and are usually untracked
    project.write(".env", "# comment\nexport FROM_FILE=file-value  # trailing\n"
                          "APP_ENV=from-file\nQUOTED=\"a\\tb\"\n")
    out = project.run("run", "wf.yml", "-y")
    assert out.returncode == 0, out.stdout + out.stderr
    # workflow env overrides the env file; no profile: the per-profile default
    first = seen(project).split()
    assert first[:7] == ["staging", "https://staging.example.com", "eu", "none", "file-value",
                         "a", "b"], first
    out = project.run("run", "wf.yml", "-y", "--profile", "prod")
    assert out.returncode == 0, out.stdout + out.stderr
    # the profile layer wins over workflow env, and a value built from a name the profile
    # sets sees the profile's value (docs/decisions.md, "Profiles")
    assert seen(project).split() == ["prod", "https://prod.example.com", "us", "yes",
                                     "file-value", "a", "b", "p=prod", "prod"]
    env = project.env
    env["PRODIGY_PROFILE"] = "prod"
    out = project.run("run", "wf.yml", "-y", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert seen(project).split()[-2:] == ["p=prod", "prod"]


def test_unknown_profile_and_missing_env_files_are_clear_errors(project: Project) -> None:
    project.write("wf.yml", WORKFLOW)
    project.write("strict.yml", WORKFLOW.replace("required: false", "required: true"))
    project.commit()
    out = project.run("run", "wf.yml", "--profile", "nope", "-y")
    assert out.returncode == 2
    assert "E1013" in out.stderr and "unknown profile 'nope'" in out.stderr
    assert "prod" in out.stderr  # the defined profiles are listed
    out = project.run("run", "wf.yml", "-y")  # no .env at all: a warning, the run goes on
    assert out.returncode == 0, out.stdout + out.stderr
    assert "W1005" in out.stderr and ".env" in out.stderr
    out = project.run("run", "strict.yml", "-y")
    assert out.returncode == 2
    assert "E2004" in out.stderr and ".env.local" in out.stderr
    assert "Starting session" not in out.stdout  # refused before anything started
