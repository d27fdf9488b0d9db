// Drives the web pages in headless Chromium for tests/api/ui_browser.rs. Every wait is
// bounded; any failed step throws and exits non-zero.
import { createRequire } from "node:module";
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";

const require = createRequire(path.join(process.env.PLAYWRIGHT_DIR, "package.json"));
const { chromium } = require("playwright-core");

const base = process.env.RUNWAY_URL;
const shots = process.env.SCREENSHOTS;
const runnerToken = process.env.RUNNER_TOKEN;
const WAIT = { timeout: 15000 };

async function api(method, url, { headers = {}, body } = {}) {
  const response = await fetch(base + url, { method, headers, body, signal: AbortSignal.timeout(15000) });
  const text = await response.text();
  return { status: response.status, text, json: () => JSON.parse(text) };
}

// The runner's side: take a job, write its log, upload artifacts, finish it.
async function takeJob() {
  const reply = await api("POST", "/api/v4/jobs/request", {
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      token: runnerToken, system_id: "s_000000000001",
      info: { name: "gitlab-runner", version: "19.4.0", executor: "shell", platform: "linux", architecture: "amd64",
              features: { trace_reset: true, trace_checksum: true, trace_size: true, cancelable: true, upload_multiple_artifacts: true } },
    }),
  });
  assert.equal(reply.status, 201, `a job for the runner: ${reply.status} ${reply.text}`);
  return reply.json();
}
async function patchLog(job, start, text) {
  const bytes = Buffer.from(text);
  const reply = await api("PATCH", `/api/v4/jobs/${job.id}/trace`, {
    headers: { "JOB-TOKEN": job.token, "Content-Range": `${start}-${start + bytes.length - 1}` },
    body: bytes,
  });
  assert.equal(reply.status, 202, reply.text);
  return start + bytes.length;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);

  // Signing in.
  await page.goto(base + "/-/ui/runners");
  assert.match(page.url(), /\/-\/ui\/login$/, "sent to sign in");
  await page.screenshot({ path: `${shots}/login.png`, fullPage: true });
  await page.getByLabel("Admin token").fill("not-the-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("That is not the admin token.").waitFor(WAIT);
  await page.getByLabel("Admin token").fill(process.env.ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/-\/ui\/runners$/, WAIT);

  // The runner is online.
  const row = page.locator(`#runner-${process.env.RUNNER_ID}`);
  await row.getByText("online", { exact: true }).waitFor(WAIT);
  assert.match(await row.innerText(), /browser-runner/);
  await page.screenshot({ path: `${shots}/runners.png`, fullPage: true });

  // A pipeline from the form.
  await page.getByRole("link", { name: "New pipeline" }).first().click();
  await page.waitForURL(/\/-\/ui\/pipelines\/new/, WAIT);
  await page.getByLabel("Ref (branch or tag)").fill("main");
  await page.getByLabel(".gitlab-ci.yml").fill(
    "stages: [build, test]\nbuild:\n  stage: build\n  script: make\n  artifacts: { paths: [out] }\nslow:\n  stage: test\n  script: sleep 600\n  needs: [build]\n");
  await page.screenshot({ path: `${shots}/new-pipeline.png`, fullPage: true });
  await page.getByRole("button", { name: "Run pipeline" }).click();
  await page.waitForURL(/\/-\/ui\/projects\/\d+\/pipelines\/\d+$/, WAIT);
  const pipelineUrl = page.url();
  assert.match(await page.locator("[data-job=slow]").innerText(), /needs build/);
  await page.screenshot({ path: `${shots}/pipeline.png`, fullPage: true });

  // A second tab keeps the pipeline page open: it follows the jobs without a reload.
  const watcher = await context.newPage();
  await watcher.goto(pipelineUrl);
  await watcher.evaluate(() => { window.notReloaded = true; });
  const buildStatus = watcher.locator("[data-job=build] .status");
  assert.equal(await buildStatus.innerText(), "pending");

  // The log grows on the page as the runner writes it, appended (the first line stays the
  // same element).
  const build = await takeJob();
  await buildStatus.filter({ hasText: "running" }).waitFor(WAIT);
  let offset = await patchLog(build, 0,
    "\x1b[0Ksection_start:1700000000:prepare_script\r\x1b[0K\x1b[36;1mPreparing environment\x1b[0;m\nRunning on runner\n");
  await page.goto(`${base}/-/ui/jobs/${build.id}`);
  const log = page.locator("#log");
  await log.getByText("Running on runner").waitFor(WAIT);
  await page.evaluate(() => { document.querySelector("#log .ln").dataset.marked = "yes"; });
  for (let i = 1; i <= 3; i++) {
    offset = await patchLog(build, offset, `\x1b[32;1m$ step ${i}\x1b[0;m\n${"x".repeat(2000)} line ${i}\n`);
    await log.getByText(`$ step ${i}`).waitFor(WAIT);
  }
  // A line the runner has not finished shows at once, and is replaced when it is.
  offset = await patchLog(build, offset, "Uploading 50%");
  await page.locator("#log-partial").getByText("Uploading 50%").waitFor(WAIT);
  offset = await patchLog(build, offset, "\rUploading 100%\n");
  await log.locator(".ln:not(#log-partial)").getByText("Uploading 100%").waitFor(WAIT);
  assert.equal(await page.locator("#log-partial").count(), 0);
  offset = await patchLog(build, offset, "\x1b[0Ksection_end:1700000069:prepare_script\r\x1b[0K\nJob succeeded\n");
  await log.getByText("Job succeeded").waitFor(WAIT);
  // The section's header shows how long it took; lines carry their numbers.
  assert.equal(await page.locator("#log details.sec[data-section=prepare_script] > summary .dur").innerText(), "01:09");
  assert.equal(await log.getByText("Job succeeded").getAttribute("data-n"), "10");
  assert.equal(await page.evaluate(() => document.querySelector("#log .ln").dataset.marked), "yes",
    "the log was appended to, not re-rendered");
  assert.equal(await page.locator("#log details.sec[data-section=prepare_script] .ln").count(), 8,
    "the lines inside the section went into it");
  assert.equal(await page.locator("#log span.fg2.b").count(), 3, "colours became classes");
  await page.screenshot({ path: `${shots}/job-live.png`, fullPage: true });

  // The artifact, uploaded before the job ends; the page shows its link once it ends.
  const form = new FormData();
  form.append("file", new Blob([Buffer.from("PK-not-really-a-zip artifact bytes")]), "artifacts.zip");
  const upload = await api("POST", `/api/v4/jobs/${build.id}/artifacts?artifact_format=zip&artifact_type=archive`,
    { headers: { "JOB-TOKEN": build.token }, body: form });
  assert.equal(upload.status, 201, upload.text);
  const done = await api("PUT", `/api/v4/jobs/${build.id}`, {
    headers: { "Content-Type": "application/json", "JOB-TOKEN": build.token },
    body: JSON.stringify({ token: build.token, state: "success" }),
  });
  assert.equal(done.status, 200, done.text);
  await page.locator("#job-status").getByText("success").waitFor(WAIT);
  await buildStatus.filter({ hasText: "success" }).waitFor(WAIT);
  await watcher.locator("[data-job=slow] .status").filter({ hasText: "pending" }).waitFor(WAIT);
  assert.equal(await watcher.evaluate(() => window.notReloaded), true, "the pipeline page was not reloaded");
  await watcher.screenshot({ path: `${shots}/pipeline-live.png`, fullPage: true });
  await watcher.close();
  const link = page.getByRole("link", { name: "Download artifacts" });
  await link.waitFor({ state: "visible", ...WAIT });
  assert.equal(await page.getByRole("button", { name: "Cancel", exact: true }).count(), 0, "a finished job has no Cancel");
  const [download] = await Promise.all([page.waitForEvent("download", WAIT), link.click()]);
  const saved = path.join(shots, "downloaded-artifacts.zip");
  await download.saveAs(saved);
  assert.equal(fs.readFileSync(saved, "utf8"), "PK-not-really-a-zip artifact bytes");
  await page.screenshot({ path: `${shots}/job-artifact.png`, fullPage: true });

  // Cancel the next job from its page.
  const slow = await takeJob();
  await page.goto(pipelineUrl);
  await page.locator("[data-job=slow] a").click();
  await page.waitForURL(new RegExp(`/-/ui/jobs/${slow.id}$`), WAIT);
  await page.getByRole("button", { name: "Cancel", exact: true }).click();
  await page.waitForURL(new RegExp(`/-/ui/jobs/${slow.id}$`), WAIT);
  const status = await page.locator("#job-status").innerText();
  assert.match(status, /^cancel(ing|ed)$/, status);
  await page.screenshot({ path: `${shots}/job-canceled.png`, fullPage: true });

  // A pipeline from an uploaded .gitlab-ci.yml, with a variable added by the form's button.
  await page.goto(base + "/-/ui/pipelines/new");
  await page.getByLabel("Ref (branch or tag)").fill("main");
  await page.getByRole("button", { name: "Add a variable" }).click();
  assert.equal(await page.locator("#variables .var").count(), 4);
  await page.getByLabel("Variable key").last().fill("GREETING");
  await page.getByLabel("Variable value").last().fill("hello");
  await page.getByLabel("…or upload it").setInputFiles({
    name: ".gitlab-ci.yml", mimeType: "text/yaml", buffer: Buffer.from("from-file:\n  script: echo $GREETING\n"),
  });
  await page.screenshot({ path: `${shots}/new-pipeline-upload.png`, fullPage: true });
  await page.getByRole("button", { name: "Run pipeline" }).click();
  await page.waitForURL(/\/-\/ui\/projects\/\d+\/pipelines\/\d+$/, WAIT);
  await page.locator("[data-job=from-file]").waitFor(WAIT);
  const fromFile = await takeJob();
  assert.equal(fromFile.job_info.name, "from-file");
  assert.ok(fromFile.variables.some((v) => v.key === "GREETING" && v.value === "hello"), "the variable reached the job");

  // A phone-sized window.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + "/-/ui/runners");
  await page.screenshot({ path: `${shots}/runners-phone.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling on a phone (${overflow}px)`);
  console.log("all steps passed");
} finally {
  await browser.close();
}
