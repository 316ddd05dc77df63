// Drives the dashboard in headless chromium (run by api/tests/dashboard.rs).
// Env: BASE (API base URL), KEY, CLIP (a WAV file of a call), QUIET (a WAV
// file in which nothing is detected), SHOTS (screenshot
// folder), CHROMIUM (the browser binary). Exits non-zero on any failed
// check, console error, page error, failed request, 4xx/5xx answer or
// request to another origin.
import { chromium } from "playwright-core";
import path from "node:path";
import fs from "node:fs";

const { BASE, KEY, CLIP, QUIET, SHOTS, CHROMIUM } = process.env;
const problems = [];
fs.mkdirSync(SHOTS, { recursive: true });

function watch(page, name) {
  page.on("console", (m) => { if (m.type() === "error") problems.push(`${name}: console error: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // A download from a blob: URL is reported as aborted once it is saved.
    if (r.url().startsWith("blob:") && r.failure() && r.failure().errorText === "net::ERR_ABORTED") return;
    problems.push(`${name}: request failed: ${r.url()} ${r.failure() && r.failure().errorText}`);
  });
  page.on("request", (r) => { const u = r.url(); if (!u.startsWith(BASE) && !u.startsWith("blob:") && !u.startsWith("data:")) problems.push(`${name}: external request ${u}`); });
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`${name}: ${r.status()} for ${r.url()}`); });
}

async function step(what, f) {
  const t = Date.now();
  await f();
  console.log(`ok: ${what} (${Date.now() - t} ms)`);
}

async function useKey(page) {
  await page.getByLabel("API key").fill(KEY);
  await page.getByRole("button", { name: "Use key" }).click();
  await page.locator("#key-state", { hasText: "key in use" }).waitFor();
}

async function noOverflow(page, name) {
  const w = page.viewportSize().width;
  const sw = await page.evaluate(() => document.documentElement.scrollWidth);
  if (sw > w + 1) problems.push(`${name}: page is ${sw}px wide in a ${w}px viewport`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"],
});
let code = 0;
try {
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 }, permissions: ["microphone"] });
  const page = await desktop.newPage();
  page.setDefaultTimeout(60000);
  watch(page, "desktop");

  await step("page loads", async () => {
    await page.goto(BASE + "/");
    await page.getByRole("heading", { name: "Upload recordings" }).waitFor();
  });
  await step("key entered", () => useKey(page));
  let species = "";
  await step("clip uploaded and job finished", async () => {
    await page.setInputFiles("#files", [CLIP, QUIET]);
    await page.getByLabel("Site").fill("dashboard meadow");
    await page.getByRole("button", { name: "Upload", exact: true }).click();
    await page.locator("#upload-state", { hasText: "Job created" }).waitFor();
    await page.locator("#uploads li.finished").waitFor({ timeout: 180000 });
    await page.screenshot({ path: path.join(SHOTS, "desktop-upload.png"), fullPage: true });
  });
  const clipName = path.basename(CLIP), quietName = path.basename(QUIET);
  await step("results show the species", async () => {
    await page.getByRole("button", { name: "View results" }).first().click();
    const cell = page.locator(`#results-table tr[data-path="${clipName}"] td.species`).first();
    await cell.waitFor();
    species = (await cell.textContent()).trim();
    if (!species || species.includes("null") || species.includes("no detection")) problems.push(`no species in the results: ${JSON.stringify(species)}`);
    console.log(`species: ${species}`);
  });
  await step("a recording without detections says so, with its best scores", async () => {
    const cell = page.locator(`#results-table tr[data-path="${quietName}"] td.species`);
    await cell.waitFor();
    const text = (await cell.textContent()).trim();
    if (!text.startsWith("no detection") || !text.includes("best scores: ") || /null|undefined/.test(text)) problems.push(`quiet recording shows ${JSON.stringify(text)}`);
    console.log(`quiet: ${text}`);
  });
  await step("a detection is inspected", async () => {
    await page.locator("#results-table button", { hasText: "Inspect" }).first().click();
    await page.locator("#spectro-caption", { hasText: "Mel spectrogram" }).waitFor();
    await page.waitForFunction(() => document.getElementById("window-audio").src.startsWith("blob:"));
    await page.screenshot({ path: path.join(SHOTS, "desktop-results.png"), fullPage: true });
  });
  await step("export downloads", async () => {
    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export CSV" }).click()]);
    const file = await download.path();
    const text = fs.readFileSync(file, "utf8");
    if (!text.startsWith("source_path,")) problems.push(`CSV export starts with ${JSON.stringify(text.slice(0, 40))}`);
  });
  await step("every window's scores", async () => {
    await page.getByLabel("Every window's scores").check();
    const quietCells = page.locator(`#results-table tr[data-path="${quietName}"] td.species`, { hasText: "scores: " });
    await quietCells.first().waitFor();
    for (const text of await quietCells.allTextContents()) {
      if (!text.trim().startsWith("no detection") || /null|undefined/.test(text)) problems.push(`a quiet window shows ${JSON.stringify(text)}`);
    }
    const windows = await page.locator(`#results-table tr[data-path="${quietName}"]`).count();
    console.log(`quiet windows: ${windows}`);
    await page.locator(`#results-table tr[data-path="${clipName}"] td.species`, { hasText: species }).first().waitFor();
    await page.screenshot({ path: path.join(SHOTS, "desktop-windows.png"), fullPage: true });
    await page.getByLabel("Every window's scores").uncheck();
    await page.locator(`#results-table tr[data-path="${quietName}"] td.species`, { hasText: "best scores" }).waitFor();
  });
  await step("recording is classified", async () => {
    await page.getByRole("tab", { name: "Upload & record" }).click();
    await page.getByRole("button", { name: "Start recording" }).click();
    await page.locator("#record-state", { hasText: "Recording" }).waitFor();
    await page.waitForTimeout(3000);
    await page.getByRole("button", { name: "Stop and classify" }).click();
    await page.locator("#record-result .species").waitFor();
    console.log(`recording: ${(await page.locator("#record-result .species").textContent()).trim()}`);
    const shown = await page.locator("#record-result").textContent();
    if (/null|undefined|NaN/.test(shown)) problems.push(`the classified clip shows ${JSON.stringify(shown)}`);
    await page.locator("#record-result details summary").click();
    await page.screenshot({ path: path.join(SHOTS, "desktop-record.png"), fullPage: true });
  });
  await step("system view", async () => {
    const tab = page.getByRole("tab", { name: "Jobs & results" });
    await tab.focus();
    await page.keyboard.press("ArrowRight");
    if ((await page.getByRole("tab", { name: "System" }).getAttribute("aria-selected")) !== "true") problems.push("arrow keys do not move between tabs");
    await page.locator("#models-table .badge", { hasText: "promoted" }).waitFor();
    await page.locator("#workers-table tbody td:not(.muted)").first().waitFor();
    await page.locator("#throughput-chart svg").waitFor();
    // A model without stored metrics says so instead of drawing a matrix.
    await page.locator("#confusion > :is(svg, p)").waitFor();
    await page.screenshot({ path: path.join(SHOTS, "desktop-system.png"), fullPage: true });
  });
  await step("charts", async () => {
    await page.getByRole("tab", { name: "Charts" }).click();
    await page.locator("#chart-species svg").waitFor();
    await page.locator("#chart-hours svg").waitFor();
    await page.screenshot({ path: path.join(SHOTS, "desktop-charts.png"), fullPage: true });
    // Nothing wider than the page at 1 280 px, on any tab.
    for (const tab of ["Upload & record", "Jobs & results", "System", "Charts"]) {
      await page.getByRole("tab", { name: tab }).click();
      await noOverflow(page, `desktop ${tab}`);
    }
  });
  await step("a job's species list and minimum confidence go with the upload", async () => {
    await page.getByRole("tab", { name: "Upload & record" }).click();
    await page.setInputFiles("#files", [CLIP]);
    await page.getByLabel("Report only these species").fill("Genus one_species-1\nspecies-2");
    await page.getByLabel("Minimum confidence").fill("0.75");
    await page.getByRole("button", { name: "Upload", exact: true }).click();
    await page.locator("#upload-state", { hasText: "Job created" }).waitFor();
    // Reads are open in this test: ask the API what the newest job reports.
    const job = await page.evaluate(async () => {
      const list = await (await fetch("/v1/jobs?limit=1")).json();
      return (await fetch("/v1/jobs/" + list.jobs[0].job_id)).json();
    });
    const want = JSON.stringify(["species-1", "species-2"]);
    if (JSON.stringify(job.species_list) !== want || job.min_confidence !== 0.75) {
      problems.push(`the upload's filter did not reach the job: ${JSON.stringify(job)}`);
    }
    await page.getByLabel("Report only these species").fill("");
    await page.getByLabel("Minimum confidence").fill("");
  });

  const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const small = await phone.newPage();
  small.setDefaultTimeout(60000);
  watch(small, "phone");
  await step("phone layout", async () => {
    await small.goto(BASE + "/");
    await useKey(small);
    await noOverflow(small, "phone upload");
    await small.screenshot({ path: path.join(SHOTS, "phone-upload.png"), fullPage: true });
    await small.getByRole("tab", { name: "Jobs & results" }).click();
    await small.locator("#jobs-table button", { hasText: "Open" }).first().click();
    await small.locator("#results-table td.species").first().waitFor();
    await noOverflow(small, "phone jobs");
    await small.screenshot({ path: path.join(SHOTS, "phone-jobs.png"), fullPage: true });
    await small.getByRole("tab", { name: "System" }).click();
    await small.locator("#models-table .badge", { hasText: "promoted" }).waitFor();
    await noOverflow(small, "phone system");
    await small.screenshot({ path: path.join(SHOTS, "phone-system.png"), fullPage: true });
    // The chart selector lists jobs by their description, which can be long.
    await small.getByRole("tab", { name: "Charts" }).click();
    await small.locator("#chart-species svg").waitFor();
    await noOverflow(small, "phone charts");
    await small.screenshot({ path: path.join(SHOTS, "phone-charts.png"), fullPage: true });
  });
} catch (e) {
  problems.push(`step failed: ${e.stack || e}`);
} finally {
  await browser.close();
}
if (problems.length) {
  console.error("dashboard problems:\n  " + problems.join("\n  "));
  code = 1;
}
console.log(`screenshots: ${SHOTS}`);
process.exit(code);
