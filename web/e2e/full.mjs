// The whole flow (DOPPEL_WEB_FULL=1): a replica trained to completed, a video made from a script
// that plays and seeks, and a CSV batch of 3 rows (one bad) ending 2 ready / 1 error. Needs the
// templates and batches API and minutes of CPU for training and rendering.
const MIN = 60_000;

export async function fullFlow(page, { BASE, step, check, shot, csv }) {
  step("full: the replica reaches completed");
  await page.goto(`${BASE}/replicas/`);
  const replicaId = process.env.REPLICA_ID;
  const item = replicaId
    ? page.locator("[data-testid=replica]", { hasText: replicaId })
    : page.locator("[data-testid=replica]", { hasText: "Barack Obama" }).first();
  await item.waitFor();
  await page.waitForFunction(
    (id) =>
      [...document.querySelectorAll("[data-testid=replica]")].some(
        (el) => (id ? el.textContent.includes(id) : el.textContent.includes("Barack Obama")) && el.dataset.status !== "started",
      ),
    replicaId ?? "",
    { timeout: Number(process.env.TRAIN_TIMEOUT_MS ?? 45 * MIN), polling: 2000 },
  );
  const status = await item.getAttribute("data-status");
  await shot("10-full-replica-done");
  check(status === "completed", `replica ended ${status}: ${await item.innerText()}`);
  const name = (await item.locator("h3").innerText()).trim();

  step("full: a video from a script");
  await page.getByRole("link", { name: "Videos", exact: true }).click();
  await page.getByLabel("Replica", { exact: true }).selectOption({ label: name });
  await page.getByLabel("Script", { exact: true }).fill("Hello from the web app. This video was made in the browser.");
  await page.getByLabel("Video name (optional)", { exact: true }).fill("web e2e");
  await page.getByRole("button", { name: "Make video" }).click();
  await page.waitForURL(/\/videos\/view\/\?id=/);
  const view = page.getByTestId("video-view");
  await view.waitFor();
  await page.waitForFunction(
    () => ["ready", "error"].includes(document.querySelector("[data-testid=video-view]")?.dataset.status ?? ""),
    null,
    { timeout: Number(process.env.RENDER_TIMEOUT_MS ?? 20 * MIN), polling: 2000 },
  );
  check((await view.getAttribute("data-status")) === "ready", `video ended: ${await view.innerText()}`);

  step("full: the player plays and seeks");
  const player = page.getByTestId("player");
  await player.waitFor();
  const played = await player.evaluate(async (v) => {
    v.muted = true;
    if (v.readyState < 1) await new Promise((r) => v.addEventListener("loadedmetadata", r, { once: true }));
    await v.play();
    await new Promise((r) => setTimeout(r, 500));
    const after = v.currentTime;
    v.pause();
    const target = v.duration / 2;
    const seeked = new Promise((r) => v.addEventListener("seeked", r, { once: true }));
    v.currentTime = target;
    await seeked;
    return { duration: v.duration, after, at: v.currentTime, target };
  });
  check(played.duration > 0 && played.after > 0, `the video played (${JSON.stringify(played)})`);
  check(Math.abs(played.at - played.target) < 0.5, `the player seeked (${JSON.stringify(played)})`);
  await shot("11-full-video-player");

  step("full: the video's webhook deliveries are listed with their status");
  await page.goto(`${BASE}/webhooks/`);
  await page.getByTestId("deliveries").waitFor();
  check((await page.getByTestId("deliveries").innerText()).includes("video.ready"), "a video.ready delivery is listed");
  await shot("13-full-webhook-deliveries");

  step("full: a template and a CSV batch of 3 rows, one bad");
  await page.goto(`${BASE}/templates/`);
  await page.getByRole("heading", { name: "Templates & batches" }).waitFor();
  const save = page.getByRole("button", { name: "Save template" });
  check(!(await page.getByText("does not offer templates yet").count()), "this server has the templates API");
  await page.getByLabel("Template name", { exact: true }).fill("web e2e");
  await page.getByLabel("Replica", { exact: true }).selectOption({ label: name });
  await page.getByLabel("Script", { exact: true }).fill("Hello {{first_name}} from {{city}}!");
  await save.click();
  await page.getByText("Saved “web e2e”").waitFor();
  await page.getByLabel("Template", { exact: true }).selectOption({ label: "web e2e" });
  await page.getByLabel(/CSV file/).setInputFiles(csv);
  await page.getByTestId("csv-preview").waitFor();
  await page.getByRole("button", { name: "Start batch" }).click();
  await page.waitForURL(/\/batches\/view\/\?id=/);
  await page.getByTestId("batch").waitFor();
  await page.waitForFunction(
    () => {
      const rows = [...document.querySelectorAll("[data-testid=batch-row]")];
      return rows.length === 3 && rows.every((r) => ["ready", "error"].includes(r.dataset.status ?? ""));
    },
    null,
    { timeout: Number(process.env.RENDER_TIMEOUT_MS ?? 20 * MIN) * 2, polling: 2000 },
  );
  const statuses = await page.$$eval("[data-testid=batch-row]", (rows) => rows.map((r) => r.dataset.status));
  await shot("12-full-batch");
  check(statuses.filter((s) => s === "ready").length === 2, `2 rows ready (${statuses})`);
  check(statuses.filter((s) => s === "error").length === 1, `1 row error (${statuses})`);
}
