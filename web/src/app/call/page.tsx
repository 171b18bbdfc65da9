"use client";

/**
 * The call page: what a conversation_url opens. The server serves this file at
 * `/conversations/<id>?t=<token>`; in development it is `/call/?c=<id>&t=<token>`. Standalone:
 * no navigation, no API key (the link's token is the permission), usable in an iframe
 * (`<iframe allow="microphone; autoplay">`).
 */
import { useCallback, useEffect, useRef, useState } from "react";
import { CallError, type AppMessage, type DoppelCall, type JoinInfo, createCallObject } from "@/call/client";
import { reasonInWords } from "@/call/words";

type Phase = "checking" | "ready" | "joining" | "joined" | "ended" | "error";
type Line = { id: number; role: "user" | "replica"; text: string; key?: string; state: "live" | "said" | "final"; cut?: boolean };

const STATE_TEXT: Record<Phase, string> = {
  checking: "Checking the call link…",
  ready: "Ready to join",
  joining: "Joining…",
  joined: "Joined: you are in the call",
  ended: "The call has ended",
  error: "Not joined",
};

const MIC_HELP =
  "To allow it, click the lock or camera icon in the address bar, set Microphone to Allow, then press Try again. " +
  "On a phone, also check that this browser may use the microphone (the system's settings).";

/** What to tell a person for a failed join: a title, the detail, what to do. */
function explain(err: CallError, inFrame: boolean): { title: string; detail: string; hint: string } {
  switch (err.kind) {
    case "bad-link":
      return { title: "This call link is not valid", detail: err.message, hint: "Open the whole link you were sent, or ask for a new one." };
    case "ended":
      return { title: "This call is over", detail: reasonInWords(err.reason), hint: "Ask for a new call link to talk again." };
    case "full":
      return { title: "Someone is already in this call", detail: "Only one person can talk with the replica at a time.", hint: "Try again once they have left." };
    case "capacity":
      return { title: "The server is busy with other calls", detail: err.message, hint: "Try again in a few minutes." };
    case "mic-refused":
      return {
        title: "The call needs your microphone",
        detail: err.message,
        hint: !/not allowed/i.test(err.message)
          ? "Then press Try again."
          : inFrame
            ? `${MIC_HELP} This page is inside another site: that site must allow the microphone (allow="microphone").`
            : MIC_HELP,
      };
    default:
      return { title: "The call could not connect", detail: err.message, hint: "Check your connection, then try again." };
  }
}

/** The captions after one event: the person's turns, and the replica's sentences as it says them
 * (replaced by the whole reply once said, cut where it was interrupted). */
function caption(lines: Line[], m: AppMessage, nextId: () => number): Line[] {
  const p = m.properties;
  const speech = typeof p.speech === "string" ? p.speech : "";
  const key = m.inference_id ?? (m.turn_idx === undefined ? undefined : String(m.turn_idx));
  const find = (open: (l: Line) => boolean) => {
    for (let i = lines.length - 1; i >= 0; i--) {
      const l = lines[i]!;
      if (l.role === "replica" && (key !== undefined && l.key !== undefined ? l.key === key : open(l))) return i;
    }
    return -1;
  };
  const put = (i: number, line: Partial<Line>) =>
    i >= 0 ? lines.map((l, j) => (j === i ? { ...l, ...line } : l)) : [...lines, { id: nextId(), role: "replica" as const, text: "", key, state: "live" as const, ...line }];
  switch (m.event_type) {
    case "conversation.utterance":
      if (p.role === "user") return speech ? [...lines, { id: nextId(), role: "user", text: speech, state: "final" }] : lines;
      return put(find((l) => l.state !== "final"), { text: speech, state: "final" });
    case "conversation.utterance.streaming": {
      if (p.final) return put(find((l) => l.state === "live"), { text: speech, state: "said" });
      const i = find((l) => l.state === "live");
      return put(i, { text: i >= 0 ? `${lines[i]!.text} ${speech}`.trim() : speech });
    }
    case "conversation.replica.stopped_speaking":
      return p.interrupted ? put(find(() => true), { cut: true }) : lines;
    default:
      return lines;
  }
}

export default function CallPage() {
  const callRef = useRef<DoppelCall | null>(null);
  const tracks = useRef<MediaStreamTrack[]>([]);
  const media = useRef<HTMLMediaElement | null>(null);
  const captionsRef = useRef<HTMLDivElement | null>(null);
  const hungUp = useRef(false);
  const ids = useRef(0);
  const [phase, setPhase] = useState<Phase>("checking");
  const [info, setInfo] = useState<JoinInfo | null>(null);
  const [error, setError] = useState<CallError | null>(null);
  const [endWords, setEndWords] = useState("");
  const [lines, setLines] = useState<Line[]>([]);
  const [latencies, setLatencies] = useState<number[]>([]);
  const [showLatency, setShowLatency] = useState(false);
  const [muted, setMuted] = useState(false);
  const [speaking, setSpeaking] = useState<"" | "user" | "replica">("");
  const [needsTap, setNeedsTap] = useState(false);
  const [inFrame, setInFrame] = useState(false);

  /** The replica's tracks into the page's media element, whichever arrives last (a stable ref
   * callback: a new one each render would restart the stream). */
  const attach = useCallback((el: HTMLMediaElement | null) => {
    media.current = el;
    if (!el || !tracks.current.length) return;
    el.srcObject = new MediaStream(tracks.current);
    el.play().then(
      () => setNeedsTap(false),
      () => setNeedsTap(true), // no user gesture reached this frame: ask for one
    );
  }, []);

  useEffect(() => {
    setInFrame(window.self !== window.top);
    const call = createCallObject({ url: window.location.href });
    callRef.current = call;
    const nextId = () => ++ids.current;
    call.on("track-started", ({ track, participant }) => {
      if (participant.local) return;
      tracks.current = [...tracks.current.filter((t) => t.kind !== track.kind), track];
      attach(media.current);
    });
    call.on("joined-meeting", () => setPhase("joined"));
    call.on("app-message", ({ data }) => {
      const p = data.properties;
      if (data.event_type === "conversation.user.started_speaking") setSpeaking("user");
      if (data.event_type === "conversation.replica.started_speaking") {
        setSpeaking("replica");
        if (typeof p.latency_s === "number") setLatencies((xs) => [...xs, p.latency_s as number]);
      }
      if (data.event_type.endsWith(".stopped_speaking")) setSpeaking("");
      setLines((ls) => caption(ls, data, nextId));
    });
    call.on("error", ({ errorMsg }) => setEndWords(errorMsg));
    call.on("left-meeting", ({ shutdown_reason }) => {
      setEndWords((lost) =>
        shutdown_reason ? reasonInWords(shutdown_reason) : hungUp.current ? "You hung up." : lost || "The connection to the call closed.",
      );
      setSpeaking("");
      setPhase("ended");
    });
    call.preAuth().then(
      (i) => {
        setInfo(i);
        setPhase("ready");
      },
      (err: unknown) => {
        setInfo(call.conversation());
        setError(err instanceof CallError ? err : new CallError("network", String(err)));
        setPhase("error");
      },
    );
    return () => void call.destroy();
  }, [attach]);

  useEffect(() => {
    if (info) document.title = `${info.conversation_name || "Call"} · Doppel`;
  }, [info]);

  useEffect(() => {
    const box = captionsRef.current;
    if (box) box.scrollTop = box.scrollHeight;
  }, [lines]);

  async function join() {
    const call = callRef.current;
    if (!call) return;
    setError(null);
    setPhase("joining");
    setEndWords("");
    hungUp.current = false;
    try {
      await call.join();
      setMuted(!call.localAudio());
    } catch (err) {
      if (call.meetingState() === "left-meeting") return;
      setError(err instanceof CallError ? err : new CallError("network", String(err)));
      setPhase("error");
    }
  }

  function toggleMute() {
    const call = callRef.current;
    if (!call) return;
    call.setLocalAudio(muted);
    setMuted(!call.localAudio());
  }

  function hangUp() {
    hungUp.current = true;
    void callRef.current?.leave();
  }

  const told = error ? explain(error, inFrame) : null;
  const retry = error && !["bad-link", "ended"].includes(error.kind);
  const inCall = phase === "joining" || phase === "joined";
  const audioOnly = info?.audio_only ?? false;
  return (
    <main id="main" className="call">
      <header className="call-head">
        <span className="brand">Doppel</span>
        {info?.conversation_name ? <h1>{info.conversation_name}</h1> : <h1>Call</h1>}
      </header>
      <p className="disclosure" data-testid="ai-disclosure">
        <strong>AI-generated:</strong> you are talking to an AI replica, not a person.
      </p>
      <p className="call-state" data-testid="call-state" data-state={phase} role="status">
        {STATE_TEXT[phase]}
        {phase === "joined" && muted ? " · your microphone is off" : ""}
      </p>
      {told ? (
        <div className="error" role="alert" data-testid="call-error" data-kind={error?.kind}>
          <p>
            <strong>{told.title}</strong>
          </p>
          {told.detail ? <p>{told.detail}</p> : null}
          <p className="hint">{told.hint}</p>
        </div>
      ) : null}
      {phase === "ready" && info?.connected ? <p className="notice">Someone seems to be in this call right now.</p> : null}
      {phase === "ready" || retry ? (
        <div className="join">
          <p className="muted small">Joining asks for your microphone: the replica hears you and answers out loud.</p>
          <button type="button" data-testid="call-join" onClick={join}>
            {retry ? "Try again" : "Join call"}
          </button>
        </div>
      ) : null}
      {phase === "ended" ? (
        <div className="ended" data-testid="call-ended">
          {endWords ? <p>{endWords}</p> : null}
          <p className="muted small">You can close this page.</p>
        </div>
      ) : null}
      {inCall || lines.length ? (
        <div className={audioOnly ? "call-body audio-only" : "call-body"}>
          {inCall ? (
            <div className="stage">
              {audioOnly ? (
                <>
                  <audio ref={attach} autoPlay data-testid="call-audio">
                    <track kind="captions" />
                  </audio>
                  <p className="audio-note">Audio-only call</p>
                </>
              ) : (
                <video ref={attach} data-testid="call-video" playsInline autoPlay aria-label="The replica">
                  <track kind="captions" />
                </video>
              )}
              {phase === "joining" ? <p className="stage-note">Connecting…</p> : null}
              {speaking ? <p className="speaking">{speaking === "user" ? "You are speaking" : "The replica is speaking"}</p> : null}
              {needsTap ? (
                <button type="button" className="tap" onClick={() => attach(media.current)}>
                  Play the replica&apos;s sound
                </button>
              ) : null}
            </div>
          ) : null}
          <section className="captions" aria-label="Captions" data-testid="captions" ref={captionsRef} aria-live="polite" aria-relevant="additions text">
            {lines.length === 0 ? <p className="muted small">Captions appear here as you talk.</p> : null}
            {lines.map((l) => (
              <p key={l.id} data-testid={`caption-${l.role}`} className={`line ${l.role}`}>
                <span className="who">{l.role === "user" ? "You" : "Replica"}</span> {l.text}
                {l.cut ? <span className="muted small"> (interrupted)</span> : null}
              </p>
            ))}
          </section>
        </div>
      ) : null}
      {inCall ? (
        <div className="controls">
          <button type="button" className="secondary" data-testid="call-mute" aria-pressed={muted} onClick={toggleMute} disabled={phase !== "joined"}>
            Mute
          </button>
          <button type="button" className="danger" data-testid="call-hangup" onClick={hangUp}>
            Hang up
          </button>
          <button type="button" className="secondary" data-testid="latency-toggle" aria-pressed={showLatency} onClick={() => setShowLatency((s) => !s)}>
            Show latency
          </button>
        </div>
      ) : null}
      {showLatency && (inCall || latencies.length) ? (
        <section className="latency" aria-labelledby="latency-title">
          <h2 id="latency-title">Reply latency</h2>
          <p className="hint">From the end of your speech to the first sound of the reply.</p>
          {latencies.length ? (
            <ol data-testid="latency-list">
              {latencies.map((s, i) => (
                <li key={i}>{s.toFixed(2)} s</li>
              ))}
            </ol>
          ) : (
            <p className="muted small" data-testid="latency-list">
              No reply to your speech yet.
            </p>
          )}
        </section>
      ) : null}
    </main>
  );
}
