"""python-gitlab, unchanged, against a running Runway: the admin and runner calls a user
makes from Python. Usage: python_gitlab_check.py BASE_URL ADMIN_TOKEN REGISTRATION_TOKEN.
Exits non-zero (with a traceback) on the first thing that does not work."""

import io
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import gitlab
import requests

url, admin_token, registration_token = sys.argv[1:4]
gl = gitlab.Gitlab(url, private_token=admin_token)

gl.auth()
assert gl.user.username == "root", gl.user.username
assert gl.user.is_admin is True
version, revision = gl.version()
assert version.startswith("18.5.0"), version

# An admin-created runner with a glrt- token.
created = gl.user.runners.create(
    {"runner_type": "instance_type", "description": "from python", "tag_list": ["py", "linux"]}
)
assert created.token.startswith("glrt-"), created.token
gl.runners.verify(created.token)

# Legacy registration through python-gitlab's runners.create (POST /runners).
legacy = gl.runners.create({"token": registration_token, "description": "legacy", "tag_list": "a,b"})
assert legacy.token and not legacy.token.startswith("glrt-")

listed = gl.runners_all.list(get_all=True)
assert sorted(r.id for r in listed) == sorted([created.id, legacy.id]), [r.id for r in listed]
by_id = {r.id: r for r in listed}
assert by_id[created.id].status == "online", by_id[created.id].status
assert by_id[legacy.id].status == "never_contacted", by_id[legacy.id].status

# Pagination: python-gitlab follows the Link headers.
assert len(gl.runners_all.list(per_page=1, get_all=True)) == 2
assert len(gl.runners_all.list(per_page=1, page=1)) == 1

runner = gl.runners.get(created.id)
assert runner.description == "from python"
assert runner.tag_list == ["py", "linux"], runner.tag_list
runner.description = "renamed"
runner.tag_list = ["arm"]
runner.paused = True
runner.save()
again = gl.runners.get(created.id)
assert (again.description, again.tag_list, again.paused) == ("renamed", ["arm"], True), again.attributes

again.delete()
try:
    gl.runners.get(created.id)
    raise AssertionError("deleted runner still found")
except gitlab.exceptions.GitlabGetError as err:
    assert err.response_code == 404, err.response_code

try:
    gl.runners.verify("glrt-not-a-token")
    raise AssertionError("unknown token verified")
except gitlab.exceptions.GitlabVerifyError as err:
    assert err.response_code == 403, err.response_code

gl.runners.delete(legacy.id)
assert gl.runners_all.list(get_all=True) == []

# CI/CD variables: a project's and the instance's.
project = gl.projects.create({"name": "py-vars"})
variable = project.variables.create(
    {"key": "DEPLOY_TOKEN", "value": "s3cr3t-t0ken", "masked": True, "protected": True}
)
assert (variable.key, variable.value, variable.masked, variable.environment_scope) == (
    "DEPLOY_TOKEN", "s3cr3t-t0ken", True, "*"), variable.attributes
project.variables.create({"key": "DEPLOY_TOKEN", "value": "prod-t0ken", "environment_scope": "production"})
assert sorted(v.environment_scope for v in project.variables.list(get_all=True)) == ["*", "production"]
scoped = project.variables.get("DEPLOY_TOKEN", filter={"environment_scope": "production"})
assert scoped.value == "prod-t0ken", scoped.attributes
project.variables.create({"key": "PLAIN", "value": "one"})
plain = project.variables.get("PLAIN")
plain.value = "two"
plain.save()
assert project.variables.get("PLAIN").value == "two"
project.variables.delete("PLAIN")
try:
    project.variables.get("PLAIN")
    raise AssertionError("deleted variable still found")
except gitlab.exceptions.GitlabGetError as err:
    assert err.response_code == 404, err.response_code
try:
    project.variables.create({"key": "SHORT", "value": "short", "masked": True})
    raise AssertionError("a value too short to mask was taken")
except gitlab.exceptions.GitlabCreateError as err:
    assert err.response_code == 400, err.response_code
instance = gl.variables.create({"key": "REGISTRY", "value": "mirror.example.com"})
assert [v.key for v in gl.variables.list(get_all=True)] == ["REGISTRY"]
assert gl.variables.get("REGISTRY").value == "mirror.example.com"
instance.delete()
assert gl.variables.list(get_all=True) == []

# Trigger tokens, and a pipeline started with one (the project reads a local repository).
repo = tempfile.mkdtemp()
for args in (["init", "-q", "-b", "main"], ["config", "user.email", "py@example.com"],
             ["config", "user.name", "py"]):
    subprocess.run(["git", "-C", repo, *args], check=True)
with open(os.path.join(repo, ".gitlab-ci.yml"), "w") as ci:
    ci.write("job: { script: [echo $FROM_TRIGGER] }\n")
subprocess.run(["git", "-C", repo, "add", "."], check=True)
subprocess.run(["git", "-C", repo, "commit", "-q", "-m", "ci"], check=True)
triggered = gl.projects.create({"name": "py-triggers", "repository_url": repo})
trigger = triggered.triggers.create({"description": "from python"})
assert trigger.token.startswith("glptt-"), trigger.attributes
assert [t.description for t in triggered.triggers.list(get_all=True)] == ["from python"]
pipeline = triggered.trigger_pipeline("main", trigger.token, variables={"FROM_TRIGGER": "python"})
assert (pipeline.source, pipeline.ref) == ("trigger", "main"), pipeline.attributes
assert [v.key for v in pipeline.variables.list(get_all=True)] == ["FROM_TRIGGER"]
report = pipeline.test_report.get()
assert (report.total_count, report.test_suites) == (0, []), report.attributes
assert pipeline.test_report_summary.get().total["count"] == 0
assert triggered.pipelines.latest(ref="main").id == pipeline.id
assert triggered.pipelines.latest().id == pipeline.id
triggered.triggers.delete(trigger.id)
assert triggered.triggers.list(get_all=True) == []

# Pipeline schedules, their variables, play and their pipelines.
schedule = triggered.pipelineschedules.create(
    {"description": "nightly", "ref": "main", "cron": "0 2 * * *", "cron_timezone": "UTC"}
)
schedule.variables.create({"key": "FROM_TRIGGER", "value": "schedule"})
again = triggered.pipelineschedules.get(schedule.id)
assert again.attributes["variables"] == [{"key": "FROM_TRIGGER", "value": "schedule", "variable_type": "env_var"}], again.attributes
schedule_id = schedule.id
# play() keeps GitLab's answer (`{"message": "201 Created"}`) as the object's attributes.
schedule.play()
schedule = triggered.pipelineschedules.get(schedule_id)
for _ in range(200):
    if schedule.pipelines.list(get_all=True):
        break
    time.sleep(0.05)
assert [p.source for p in schedule.pipelines.list(get_all=True)] == ["schedule"]
schedule.description = "renamed"
schedule.save()
assert triggered.pipelineschedules.get(schedule.id).description == "renamed"
schedule.take_ownership()
schedule.delete()
assert triggered.pipelineschedules.list(get_all=True) == []

# The latest artifacts of a ref: a job run through the runner API (as a runner would,
# with requests), then python-gitlab's artifacts.download.
worker = gl.user.runners.create({"runner_type": "instance_type"})
built = triggered.pipelines.create({"ref": "main"})
taken = requests.post(f"{url}/api/v4/jobs/request", json={"token": worker.token}, timeout=30)
assert taken.status_code == 201, taken.text
job = taken.json()
archive = io.BytesIO()
with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr("out/version.txt", "from python")
uploaded = requests.post(f"{url}/api/v4/jobs/{job['id']}/artifacts",
                         headers={"JOB-TOKEN": job["token"]},
                         files={"file": ("artifacts.zip", archive.getvalue())}, timeout=30)
assert uploaded.status_code == 201, uploaded.text
finished = requests.put(f"{url}/api/v4/jobs/{job['id']}", json={"token": job["token"], "state": "success"}, timeout=30)
assert finished.status_code == 200, finished.text
downloaded = triggered.artifacts.download(ref_name="main", job="job")
assert zipfile.ZipFile(io.BytesIO(downloaded)).read("out/version.txt") == b"from python"
assert triggered.artifacts.raw("main", "out/version.txt", "job") == b"from python"
gl.runners.delete(worker.id)

# Project runners, a runner's jobs and managers.
own = gl.user.runners.create({"runner_type": "project_type", "project_id": project.id})
assert [r.id for r in project.runners.list(get_all=True, type="project_type")] == [own.id]
triggered.runners.create({"runner_id": own.id})
assert own.id in [r.id for r in triggered.runners.list(get_all=True)]
triggered.runners.delete(own.id)
assert own.id not in [r.id for r in triggered.runners.list(get_all=True)]
fetched = gl.runners.get(own.id)
assert fetched.jobs.list(get_all=True) == []
# python-gitlab has no manager for runner managers: its raw call reaches the route.
assert gl.http_get(f"/runners/{own.id}/managers") == []

# Environments, deployments, resource groups and releases (issue 24); the jobs run as a
# runner runs them (with requests), the release made with the job's token as release-cli
# makes it.
deploys = gl.projects.create({"name": "py-deploys"})
deploy_yaml = """
deploy:
  resource_group: production
  environment: { name: production, url: "https://prod.example.com", on_stop: stop_production }
  script: [ deploy ]
stop_production:
  environment: { name: production, action: stop }
  when: manual
  script: [ stop ]
release:
  script: [ echo release ]
  release: { tag_name: v1.0.0, description: first notes }
"""
deploys.pipelines.create({"ref": "main", "ci_config": deploy_yaml})
groups = deploys.resource_groups.list(get_all=True)
assert [g.key for g in groups] == ["production"], [g.key for g in groups]
group = deploys.resource_groups.get("production")
assert group.process_mode == "unordered", group.process_mode
group.process_mode = "oldest_first"
group.save()
assert deploys.resource_groups.get("production").process_mode == "oldest_first"
assert group.upcoming_jobs.list(get_all=True) == []
# The project's own runner: jobs of the earlier projects stay pending for the others.
runner = gl.user.runners.create({"runner_type": "project_type", "project_id": deploys.id})
for _ in range(2):
    # A release job goes to runners that run build steps (`multi_build_steps`).
    taken = requests.post(f"{url}/api/v4/jobs/request", timeout=30,
                          json={"token": runner.token, "info": {"features": {"multi_build_steps": True}}})
    assert taken.status_code == 201, taken.text
    job = taken.json()
    if job["job_info"]["name"] == "release":
        made = requests.post(f"{url}/api/v4/projects/{deploys.id}/releases", headers={"JOB-TOKEN": job["token"]},
                             json={"tag_name": "v1.0.0", "description": "first notes"}, timeout=30)
        assert made.status_code == 201, made.text
    done = requests.put(f"{url}/api/v4/jobs/{job['id']}", json={"token": job["token"], "state": "success"}, timeout=30)
    assert done.status_code == 200, done.text
environments = deploys.environments.list(get_all=True)
assert [(e.name, e.external_url) for e in environments] == [("production", "https://prod.example.com")], [e.attributes for e in environments]
environment = deploys.environments.get(environments[0].id)
assert environment.last_deployment["status"] == "success", environment.last_deployment
deployments = deploys.deployments.list(get_all=True)
assert [(d.status, d.environment["name"]) for d in deployments] == [("success", "production")]
assert deploys.deployments.get(deployments[0].id).deployable["name"] == "deploy"
stopped = environment.stop()
assert stopped["state"] == "stopping", stopped
staging = deploys.environments.create({"name": "staging", "external_url": "https://staging.example.com"})
assert staging.state == "available"
assert staging.stop()["state"] == "stopped"
deploys.environments.delete(staging.id)
assert [r.tag_name for r in deploys.releases.list(get_all=True)] == ["v1.0.0"]
assert deploys.releases.get("v1.0.0").description == "first notes"
deploys.releases.create({"tag_name": "v0.1", "ref": "a" * 40, "description": "older"})
release = deploys.releases.get("v0.1")
release.description = "renamed"
release.save()
assert deploys.releases.get("v0.1").description == "renamed"
deploys.releases.delete("v0.1")
assert [r.tag_name for r in deploys.releases.list(get_all=True)] == ["v1.0.0"]
gl.runners.delete(runner.id)

try:
    gitlab.Gitlab(url, private_token="wrong").auth()
    raise AssertionError("wrong admin token accepted")
except gitlab.exceptions.GitlabAuthenticationError as err:
    assert err.response_code == 401, err.response_code

print("python-gitlab: all checks passed")
