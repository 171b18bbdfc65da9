// Browser tests of the web app against a running Doppel (tests/test_web.py starts one).
// playwright-core drives Debian's chromium; no browser is downloaded.
//   BASE_URL=http://127.0.0.1:8000 API_KEY=... node e2e/run.mjs
// Env: ARTIFACTS (screenshots; default e2e/artifacts), TRAIN_VIDEO (a clip to upload through the
// form), CHROMIUM (default /usr/bin/chromium), DOPPEL_WEB_FULL=1 for the whole flow (a replica
// trained to completed, a video made and played, a CSV batch), REPLICA_ID (an operator-made
// replica the full flow may use instead of the uploaded one).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { fullFlow } from "./full.mjs";

const BASE = (process.env.BASE_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const KEY = process.env.API_KEY ?? "";
const ARTIFACTS = process.env.ARTIFACTS ?? new URL("./artifacts", import.meta.url).pathname;
const TRAIN_VIDEO = process.env.TRAIN_VIDEO ?? "";
mkdirSync(ARTIFACTS, { recursive: true });

const WIDTHS = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } };
const consoleErrors = [];
let allow = []; // console errors expected at this step (e.g. the refused key's 401)
let failed = async () => {}; // on a failure: a screenshot and the page's error messages

function step(name) {
  console.log(`- ${name}`);
}
function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ viewport: WIDTHS.desktop });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on("console", (m) => {
    if (m.type() === "error" && !allow.some((re) => re.test(m.text()))) consoleErrors.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`${page.url()}: ${e.message}`));
  page.on("response", async (r) => {
    if (r.status() >= 400 && r.url().includes("/v2/"))
      console.log(`  (${r.request().method()} ${r.url()} -> ${r.status()} ${(await r.text().catch(() => "")).slice(0, 300)})`);
  });
  const shot = (name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  failed = async () => {
    await shot("failure").catch(() => {});
    const alerts = await page.locator(".error").allInnerTexts().catch(() => []);
    if (alerts.length) console.log(`  alerts on ${page.url()}:\n    ${alerts.join("\n    ")}`);
  };

  step("an unsigned visit goes to sign-in");
  await page.goto(`${BASE}/`);
  await page.waitForURL(/\/signin\//);
  await page.getByRole("heading", { name: "Sign in" }).waitFor();

  step("the form is usable by keyboard");
  let focused = "";
  for (let i = 0; i < 6 && focused !== "api-key"; i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => document.activeElement?.id ?? "");
  }
  check(focused === "api-key", "Tab reaches the API key field");

  step("a wrong key is refused with a message");
  allow = [/status of 401/];
  await page.keyboard.type("dk_wrong-key-0000");
  await page.keyboard.press("Enter");
  const alert = page.locator(".error[role=alert]");
  await alert.waitFor();
  check((await alert.innerText()).includes("not recognised"), "the refusal says the key was not recognised");
  check(/\/signin\//.test(page.url()), "still on sign-in");
  await shot("01-signin-wrong-key");
  allow = [];

  step("the right key signs in");
  await page.getByLabel("API key", { exact: true }).fill(KEY);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/replicas\//);
  await page.getByRole("heading", { name: "Replicas" }).waitFor();
  await shot("02-replicas");

  step("the replica form shows the requirements and the consent sentence with the name");
  const reqs = page.getByLabel("What the training video needs", { exact: true });
  for (const word of ["Length", "One face", "Talking, then silent", "Consent"]) {
    check((await reqs.innerText()).includes(word), `requirements mention ${word}`);
  }
  await page.getByLabel("Person's name", { exact: true }).fill("Barack Obama");
  await page.waitForFunction(() =>
    document.querySelector("[data-testid=consent-statement]")?.textContent?.includes("Barack Obama"),
  );

  if (TRAIN_VIDEO) {
    step("upload a training clip through the form: it appears with status and progress");
    await page.getByLabel("Training video", { exact: true }).setInputFiles(TRAIN_VIDEO);
    await page.getByRole("button", { name: "Upload and train" }).click();
    const item = page.locator("[data-testid=replica]", { hasText: "Barack Obama" }).first();
    await item.waitFor({ timeout: 60_000 });
    const status = await item.getAttribute("data-status");
    // With a worker running (the full flow), this upload has no consent statement: it may
    // already have ended in error, saying so.
    const said = await item.innerText();
    check(
      ["started", "completed"].includes(status ?? "") || (status === "error" && said.includes("Consent not verified")),
      `new replica status is ${status}: ${said}`,
    );
    if (status === "started") await item.getByRole("progressbar").waitFor();
    await shot("03-replica-uploaded");
  }

  step("an API error shows the API's own message");
  allow = [/status of 404/];
  await page.goto(`${BASE}/videos/view/?id=v000000000000`);
  const notFound = page.locator(".error[role=alert]");
  await notFound.waitFor();
  check((await notFound.innerText()).includes("No video v000000000000"), "the 404's detail is shown");
  allow = [];

  step("videos page");
  await page.getByRole("link", { name: "Videos", exact: true }).click();
  await page.getByRole("heading", { name: "Videos" }).waitFor();
  await page.getByLabel("Script", { exact: true }).waitFor();
  await shot("04-videos");

  step("templates: variables are detected as you type, a CSV's bad row is shown before sending");
  await page.getByRole("link", { name: "Templates & batches" }).click();
  await page.getByRole("heading", { name: "Templates & batches" }).waitFor();
  await page.getByLabel("Script", { exact: true }).fill("Hello {{first_name}} from {{city}}!");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=variable]").length === 2);
  await page.getByLabel("first_name", { exact: true }).fill("Ada");
  await page.getByLabel("city", { exact: true }).fill("Paris");
  check((await page.getByTestId("preview").innerText()) === "Hello Ada from Paris!", "one-row preview");
  const csv = join(ARTIFACTS, "rows.csv");
  writeFileSync(csv, "first_name,city\nAda,Paris\nGrace,\nAlan,London\n");
  await shot("05-templates");
  await page.getByLabel(/CSV file/).setInputFiles(csv);
  const preview = page.getByTestId("csv-preview");
  await preview.waitFor();
  check((await page.getByTestId("csv-row").count()) === 3, "the CSV preview has 3 rows");
  const bad = page.locator("[data-testid=csv-row].bad");
  check((await bad.count()) === 1, "one row is flagged before sending");
  check((await bad.innerText()).includes("Missing city"), "the flagged row names the missing variable");
  await shot("06-csv-preview");

  step("personas: a bad tools list is named before sending; the saved key shows masked; the context is edited");
  await page.getByRole("link", { name: "Personas", exact: true }).click();
  await page.getByRole("heading", { name: "Personas", exact: true }).waitFor();
  await page.getByLabel("Persona name", { exact: true }).fill("Coach");
  await page.getByLabel("System prompt", { exact: true }).fill("You are a patient running coach.");
  await page.getByLabel("Model", { exact: true }).fill("qwen2.5");
  await page.getByLabel("Base URL", { exact: true }).fill("https://93.184.216.34/v1");
  await page.getByLabel("API key", { exact: true }).fill("sk-web-test-key-9876");
  const tools = page.getByLabel("Tools (JSON, OpenAI function definitions)", { exact: true });
  await tools.fill('[{"type": "function"}]');
  check((await page.getByTestId("tools-problem").innerText()).includes("Tool 1 needs"), "a bad tool is named before sending");
  check(await page.getByRole("button", { name: "Save persona" }).isDisabled(), "saving waits for valid tools");
  await tools.fill('[{"type": "function", "function": {"name": "get_weather"}}]');
  await page.getByRole("button", { name: "Save persona" }).click();
  const persona = page.locator("[data-testid=persona]", { hasText: "Coach" }).first();
  await persona.waitFor();
  check((await persona.getByTestId("masked-key").innerText()) === "...9876", "the key shows its last four characters only");
  check(!(await page.content()).includes("sk-web-test-key-9876"), "the whole key is nowhere in the page");
  await persona.getByLabel("Context of Coach", { exact: true }).fill("Training for a half marathon.");
  await persona.getByRole("button", { name: "Save context" }).click();
  await page.waitForFunction(() =>
    [...document.querySelectorAll("[data-testid=persona] button")].some((b) => b.textContent === "Save context" && b.disabled),
  );
  const stored = await page.evaluate(
    async (key) => (await (await fetch("/v2/personas?page=1&limit=5", { headers: { "x-api-key": key } })).json()).data,
    KEY,
  );
  check(stored.some((p) => p.persona_name === "Coach" && p.context === "Training for a half marathon."), "the edit reached the server");
  await shot("08-personas");

  step("conversations: the list and the start form (the persona just made is offered)");
  // The nav's link: the personas page links to Conversations too.
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Conversations", exact: true }).click();
  await page.getByRole("heading", { name: "Conversations", exact: true }).waitFor();
  await page.getByTestId("calls-list").waitFor({ state: "attached" });
  await page.getByRole("heading", { name: "Start a call" }).waitFor();
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#call-persona option")].some((o) => o.textContent === "Coach"),
  );
  await page.getByLabel("Replica", { exact: true }).waitFor();
  await page.getByLabel("Record the call", { exact: true }).waitFor();
  await page.getByRole("button", { name: "Start call" }).waitFor();
  await shot("08-calls");

  step("webhooks page");
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByRole("heading", { name: "Webhooks" }).waitFor();
  // A URL on the test server itself (DOPPEL_ALLOW_PRIVATE_URLS=1 there): its deliveries get a
  // 404 and show in the list as failed attempts.
  await page.getByLabel("URL", { exact: true }).fill(`${BASE}/webhook-sink/`);
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByText("Saved: new replicas").waitFor();
  await page.getByRole("heading", { name: "Recent deliveries" }).waitFor();
  await shot("07-webhooks");

  step("phone width: every screen");
  await page.setViewportSize(WIDTHS.phone);
  for (const [name, path] of [
    ["replicas", "/replicas/"],
    ["videos", "/videos/"],
    ["templates", "/templates/"],
    ["personas", "/personas/"],
    ["calls", "/calls/"],
    ["webhooks", "/webhooks/"],
  ]) {
    await page.goto(`${BASE}${path}`);
    await page.getByRole("heading", { level: 1 }).first().waitFor();
    // Not "networkidle": a page with a replica training holds its server-sent events open.
    await page.waitForLoadState("load");
    await page.waitForTimeout(500);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${name} fits the phone width (overflows by ${overflow}px)`);
    await shot(`phone-${name}`);
  }

  if (process.env.DOPPEL_WEB_FULL === "1") {
    await page.setViewportSize(WIDTHS.desktop);
    await fullFlow(page, { BASE, ARTIFACTS, step, check, shot, csv });
  }

  check(consoleErrors.length === 0, `no console errors, got:\n  ${consoleErrors.join("\n  ")}`);
  console.log("web e2e: all checks passed");
} catch (err) {
  await failed();
  throw err;
} finally {
  await browser.close();
}
