// Browser test of a live call: the call page a conversation_url opens, against a running Doppel
// with a completed replica. playwright-core drives Debian's chromium (no browser is downloaded);
// its fake microphone plays QUESTION_WAV once, then silence.
//   CALL_URL=http://127.0.0.1:8000/conversations/c123?t=... QUESTION_WAV=q.wav EXPECT_WORDS=paris \
//     ENDED_URL=... node e2e/call.mjs
// Env:
//   CALL_URL      a fresh conversation_url (required): joined, talked to, hung up
//   QUESTION_WAV  the question the fake microphone says (required; a wav file)
//   EXPECT_WORDS  comma-separated words the replica's answer caption must all hold (any case;
//                 empty: any replica caption)
//   BAD_URL       the same conversation with a wrong token (default: CALL_URL with t=wrong-token)
//   ENDED_URL     an ended conversation's url (its check is skipped when unset)
//   SECOND_URL    what a second person opens while the first is in the call, to be refused as
//                 full (default: CALL_URL)
//   ARTIFACTS     screenshot folder (default e2e/artifacts/call)
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   REPLY_TIMEOUT_MS  longest wait for the answer's caption (default 240000: a CPU machine)
// Last line: `CALL_STATS {json}` (fps, framesDecoded, framesDropped, freezeCount and
// totalFreezesDuration over a 10 s window of the replica's video, latencies, captions).
// Exits non-zero naming the first failed check (fps >= 24, dropped < 1 %, no freeze included).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = process.env;
function need(name) {
  if (!env[name]) {
    console.error(`call e2e: set ${name} (see the header of e2e/call.mjs)`);
    process.exit(2);
  }
  return env[name];
}
const CALL_URL = need("CALL_URL");
const QUESTION_WAV = need("QUESTION_WAV");
const BAD_URL = env.BAD_URL || withToken(CALL_URL, "wrong-token");
const ENDED_URL = env.ENDED_URL ?? "";
const SECOND_URL = env.SECOND_URL || CALL_URL;
const EXPECT = (env.EXPECT_WORDS ?? "").split(",").map((w) => w.trim().toLowerCase()).filter(Boolean);
const ARTIFACTS = env.ARTIFACTS ?? new URL("./artifacts/call", import.meta.url).pathname;
const REPLY_TIMEOUT_MS = Number(env.REPLY_TIMEOUT_MS ?? 240_000);
const WINDOW_MS = 10_000;
// With API_KEY: after hanging up, the web app's conversation page (signed in with the key)
// shows the call's transcript and per-turn latencies.
const API_KEY = env.API_KEY ?? "";
const WIDTHS = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } };
mkdirSync(ARTIFACTS, { recursive: true });

function withToken(url, token) {
  const u = new URL(url);
  u.searchParams.set("t", token);
  return u.toString();
}
function step(name) {
  console.log(`- ${name}`);
}
function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}
const state = (page, s) => page.locator(`[data-testid=call-state][data-state=${s}]`).waitFor();

// Counts getUserMedia calls and keeps every RTCPeerConnection (window.__pcs) for getStats.
function hooks() {
  window.__gum = 0;
  const devices = navigator.mediaDevices;
  if (devices?.getUserMedia) {
    const getUserMedia = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
      window.__gum += 1;
      return getUserMedia(constraints);
    };
  }
  window.__pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };
}

/** The inbound video's counters, summed over the page's peer connections. */
async function videoStats(page) {
  return page.evaluate(async () => {
    const out = { at: performance.now(), framesDecoded: 0, framesDropped: 0, freezeCount: 0, totalFreezesDuration: 0, found: false };
    for (const pc of window.__pcs) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((r) => {
        if (r.type !== "inbound-rtp" || r.kind !== "video") return;
        out.found = true;
        for (const k of ["framesDecoded", "framesDropped", "freezeCount", "totalFreezesDuration"]) out[k] += r[k] ?? 0;
      });
    }
    return out;
  });
}

const captionsOf = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("[data-testid^=caption-]")].map((el) => ({
      role: el.dataset.testid.replace("caption-", ""),
      text: el.textContent.replace(/^(You|Replica) /, "").trim(),
    })),
  );

const browser = await chromium.launch({
  executablePath: env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${QUESTION_WAV}%noloop`,
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    // A microphone needs a secure origin: let a plain-http test server be one.
    `--unsafely-treat-insecure-origin-as-secure=${new URL(CALL_URL).origin}`,
  ],
});
let page = null;
const pageErrors = [];
const stats = { fps: 0, framesDecoded: 0, framesDropped: 0, freezeCount: 0, totalFreezesDuration: 0, latencies: [], captions: [] };
try {
  const context = await browser.newContext({ viewport: WIDTHS.desktop });
  await context.addInitScript(hooks);
  page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  const shot = (p, name) => p.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

  step("a wrong token: the page says the link is wrong, and never asks for the microphone");
  await page.goto(BAD_URL);
  const bad = page.locator("[data-testid=call-error][data-kind=bad-link]");
  await bad.waitFor();
  check((await bad.innerText()).includes("not valid"), `the wrong link is named: ${await bad.innerText()}`);
  check((await page.getByTestId("call-join").count()) === 0, "no Join button on a wrong link");
  check((await page.evaluate(() => window.__gum)) === 0, "getUserMedia was not called");
  await shot(page, "call-bad-link");

  if (ENDED_URL) {
    step("an ended conversation: the page says the call is over");
    await page.goto(ENDED_URL);
    const over = page.locator("[data-testid=call-error][data-kind=ended]");
    await over.waitFor();
    check((await over.innerText()).includes("This call is over"), `the call is over: ${await over.innerText()}`);
    check((await page.evaluate(() => window.__gum)) === 0, "getUserMedia was not called for an ended call");
    await shot(page, "call-over");
  } else step("(ENDED_URL not set: the ended-link check is skipped)");

  step("join the call");
  await page.goto(CALL_URL);
  await page.getByText("AI-generated: you are talking to an AI replica, not a person.").waitFor();
  await page.getByTestId("call-join").click();
  await state(page, "joined");
  check((await page.evaluate(() => window.__gum)) === 1, "the microphone was asked for once");

  step("a second person is refused while the first is in the call");
  const second = await browser.newContext({ viewport: WIDTHS.phone });
  await second.addInitScript(hooks);
  const other = await second.newPage();
  await other.goto(SECOND_URL);
  await other.getByTestId("call-join").click();
  const full = other.locator("[data-testid=call-error][data-kind=full]");
  await full.waitFor();
  check((await full.innerText()).includes("Someone is already in this call"), `the second person is told: ${await full.innerText()}`);
  await shot(other, "call-full");
  await second.close();
  check((await page.getByTestId("call-state").getAttribute("data-state")) === "joined", "the first person is still in the call");

  step(`the replica answers the question (caption with: ${EXPECT.join(", ") || "anything"})`);
  await page
    .waitForFunction(
      (words) =>
        [...document.querySelectorAll("[data-testid=caption-replica]")].some((el) => {
          const text = el.textContent.toLowerCase();
          return words.length ? words.every((w) => text.includes(w)) : text.trim().length > 0;
        }),
      EXPECT,
      { timeout: REPLY_TIMEOUT_MS, polling: 500 },
    )
    .catch(async () => {
      throw new Error(`check failed: no replica caption with ${EXPECT.join(", ")} within ${REPLY_TIMEOUT_MS / 1000} s; captions: ${JSON.stringify(await captionsOf(page))}`);
    });

  step("the replica's video plays smoothly (10 s of getStats)");
  const playing = await page.getByTestId("call-video").evaluate((v) => ({ width: v.videoWidth, paused: v.paused }));
  check(playing.width > 0 && !playing.paused, `the video element plays the replica (${JSON.stringify(playing)})`);
  const s0 = await videoStats(page);
  check(s0.found, "an inbound video stream is in getStats (is CALL_URL an audio-only conversation?)");
  await page.waitForTimeout(WINDOW_MS);
  const s1 = await videoStats(page);
  const decoded = s1.framesDecoded - s0.framesDecoded;
  Object.assign(stats, {
    fps: +((1000 * decoded) / (s1.at - s0.at)).toFixed(2),
    framesDecoded: decoded,
    framesDropped: s1.framesDropped - s0.framesDropped,
    freezeCount: s1.freezeCount - s0.freezeCount,
    totalFreezesDuration: +(s1.totalFreezesDuration - s0.totalFreezesDuration).toFixed(3),
    totals: s1,
  });

  step("the latency of each reply is listed");
  await page.getByTestId("latency-toggle").click();
  check((await page.getByTestId("latency-toggle").getAttribute("aria-pressed")) === "true", "the toggle is pressed");
  await page.locator("[data-testid=latency-list] li").first().waitFor();
  stats.latencies = (await page.locator("[data-testid=latency-list] li").allInnerTexts()).map((t) => parseFloat(t));
  check(stats.latencies.length > 0 && stats.latencies.every((s) => Number.isFinite(s) && s >= 0), `latencies: ${stats.latencies}`);

  step("the call page in a call: desktop and phone");
  await shot(page, "call-desktop");
  await page.setViewportSize(WIDTHS.phone);
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the call page fits the phone width (overflows by ${overflow}px)`);
  await shot(page, "call-phone");
  await page.setViewportSize(WIDTHS.desktop);

  step("hang up: the call has ended");
  stats.captions = await captionsOf(page);
  await page.getByTestId("call-hangup").click();
  await state(page, "ended");
  check((await page.getByText("The call has ended").count()) > 0, "the ended state says so");
  await shot(page, "call-ended");
  await page.setViewportSize(WIDTHS.phone);
  await shot(page, "call-ended-phone");

  if (API_KEY) {
    step("the web app's conversation page: the transcript and each turn's latency");
    const base = new URL(CALL_URL);
    const cid = base.pathname.split("/").filter(Boolean).pop();
    await page.setViewportSize(WIDTHS.desktop);
    await page.goto(`${base.origin}/signin/`);
    await page.getByLabel("API key", { exact: true }).fill(API_KEY);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL((u) => !/\/signin\//.test(u.pathname));
    const view = `${base.origin}/calls/view/?id=${cid}`;
    for (let i = 0; ; i++) {  // the call's end and its last lines are written as it closes
      await page.goto(view);
      await page.getByTestId("call-view").waitFor();
      const ended = (await page.getByTestId("call-view").getAttribute("data-status")) === "ended";
      const rows = await page.locator("[data-testid=turns] tbody tr").count();
      if ((ended && rows > 0) || i >= 20) break;
      await page.waitForTimeout(1000);
    }
    const transcript = (await page.getByTestId("transcript").innerText()).toLowerCase();
    check(EXPECT.every((w) => transcript.includes(w)), `the transcript holds the answer: ${transcript.slice(0, 400)}`);
    check(!transcript.includes("invalid"), `each transcript line has its time: ${transcript.slice(0, 400)}`);
    const turns = await page.locator("[data-testid=turns] tbody tr").allInnerTexts();
    check(turns.some((t) => /speech/.test(t) && /\d+\.\d+/.test(t)), `a turn answering speech with its latency: ${JSON.stringify(turns)}`);
    stats.viewTurns = turns;
    await shot(page, "call-view");
  }

  check(stats.fps >= 24, `video at ${stats.fps} fps (at least 24)`);
  check(stats.framesDecoded > 0 && stats.framesDropped / stats.framesDecoded < 0.01, `${stats.framesDropped} of ${stats.framesDecoded} frames dropped (under 1 %)`);
  check(stats.freezeCount === 0, `${stats.freezeCount} freeze(s) in the window (${stats.totalFreezesDuration} s)`);
  check(pageErrors.length === 0, `no uncaught page errors, got:\n  ${pageErrors.join("\n  ")}`);
  console.log("call e2e: all checks passed");
} catch (err) {
  if (page) {
    await page.screenshot({ path: join(ARTIFACTS, "call-failure.png"), fullPage: true }).catch(() => {});
    const said = await page.locator("[data-testid=call-error], [data-testid=call-state]").allInnerTexts().catch(() => []);
    if (said.length) console.log(`  the page says: ${said.join(" | ")}`);
  }
  console.error(err.message ?? err);
  process.exitCode = 1;
} finally {
  if (page && !stats.captions.length) stats.captions = await captionsOf(page).catch(() => []);
  console.log(`CALL_STATS ${JSON.stringify(stats)}`);
  await browser.close();
}
