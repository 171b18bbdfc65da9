/**
 * A Doppel call from the browser, without React: WebRTC to the replica, its events on a data
 * channel. Names follow daily-js where they overlap (createCallObject, join, leave, on/off/once,
 * sendAppMessage, setLocalAudio, participants, meetingState, the event names), so code written
 * for a Tavus call ports by renaming the import.
 *
 *   import { createCallObject } from "@/call/client";
 *   const call = createCallObject();
 *   call.on("track-started", ({ track, participant }) => {
 *     if (!participant.local) (video.srcObject as MediaStream).addTrack(track);
 *   });
 *   call.on("app-message", ({ data }) => {
 *     if (data.event_type === "conversation.utterance") console.log(data.properties.role, data.properties.speech);
 *   });
 *   call.on("left-meeting", ({ shutdown_reason }) => console.log("ended:", shutdown_reason));
 *   await call.join({ url: conversationUrl }); // rejects with a CallError {kind, message}
 *   call.sendAppMessage({ event_type: "conversation.respond", properties: { text: "Hello" } });
 *
 * The link is a conversation_url, `https://host/conversations/<id>?t=<token>` (or the dev form
 * `/call/?c=<id>&t=<token>`); its token is the only permission, no API key. One offer, not
 * trickled: the offer is sent once ICE gathering has completed (or after 3 s).
 */

export type CallErrorKind = "bad-link" | "ended" | "full" | "mic-refused" | "capacity" | "network";
export type MeetingState = "new" | "joining-meeting" | "joined-meeting" | "left-meeting" | "error";

export class CallError extends Error {
  constructor(
    readonly kind: CallErrorKind,
    message: string,
    /** The conversation's `shutdown_reason` when kind is "ended" and the server said it. */
    readonly reason: string | null = null,
  ) {
    super(message);
  }
}

/** `GET /v2/conversations/<id>/join?t=`: what the link opens. */
export type JoinInfo = {
  conversation_id: string;
  conversation_name: string;
  status: "active" | "ended";
  shutdown_reason: string | null;
  audio_only: boolean;
  replica_id: string;
  /** Someone is connected to the call right now (a second person is refused). */
  connected: boolean;
  /** STUN/TURN for the browser's side, where the server names some (URLs or RTCIceServer). */
  ice_servers?: (string | RTCIceServer)[];
};

export type Participant = {
  session_id: "local" | "replica";
  user_id: string;
  local: boolean;
  audio: boolean;
  video: boolean;
  tracks: { audio?: MediaStreamTrack; video?: MediaStreamTrack };
};

/** The data channel's envelope (Tavus's), both ways. */
export type AppMessage = {
  message_type: "conversation";
  event_type: string;
  conversation_id: string;
  properties: Record<string, unknown>;
  seq?: number;
  timestamp?: number;
  turn_idx?: number;
  inference_id?: string;
};

export type CallEvents = {
  "joining-meeting": { action: "joining-meeting" };
  "joined-meeting": { action: "joined-meeting" };
  /** `shutdown_reason`: the server's (system.shutdown), or null when this side left. */
  "left-meeting": { action: "left-meeting"; shutdown_reason: string | null };
  "participant-joined": { action: "participant-joined"; participant: Participant };
  "participant-updated": { action: "participant-updated"; participant: Participant };
  "participant-left": { action: "participant-left"; participant: Participant };
  "track-started": { action: "track-started"; track: MediaStreamTrack; participant: Participant; type: "audio" | "video" };
  "app-message": { action: "app-message"; data: AppMessage; fromId: "replica" };
  error: { action: "error"; errorMsg: string; kind: CallErrorKind };
};
type Handler<E extends keyof CallEvents> = (event: CallEvents[E]) => void;

export type CallOptions = {
  url?: string;
  /** ICE servers for the browser's side: by default the server's (`ice_servers` of /join), else
   * none (the server is reached directly). */
  iceServers?: RTCIceServer[];
  /** A microphone track to send instead of asking for one (getUserMedia). */
  audioSource?: MediaStreamTrack;
};

const GATHER_MS = 3000;
const CONNECT_MS = 20000;

/** The conversation id, token and API origin of a conversation_url; null if it has neither. */
export function parseCallUrl(url: string): { origin: string; id: string; token: string } | null {
  let u: URL;
  try {
    u = new URL(url, typeof location === "undefined" ? "http://localhost" : location.href);
  } catch {
    return null;
  }
  const path = /\/conversations\/([^/]+)\/?$/.exec(u.pathname);
  const id = path ? decodeURIComponent(path[1] ?? "") : (u.searchParams.get("c") ?? "");
  const token = u.searchParams.get("t") ?? "";
  return id && token ? { origin: u.origin, id, token } : null;
}

async function request<T>(url: string, init?: RequestInit): Promise<{ status: number; body: T & { detail?: string } }> {
  let response: Response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new CallError("network", "The Doppel server could not be reached. Check your connection, then try again.");
  }
  const body = await response.json().catch(() => ({}));
  return { status: response.status, body };
}

export class DoppelCall {
  private handlers = new Map<keyof CallEvents, Set<Handler<never>>>();
  private state: MeetingState = "new";
  private info: JoinInfo | null = null;
  private link: ReturnType<typeof parseCallUrl> = null;
  private pc: RTCPeerConnection | null = null;
  private channel: RTCDataChannel | null = null;
  private mic: MediaStreamTrack | null = null;
  private local: Participant = { session_id: "local", user_id: "local", local: true, audio: false, video: false, tracks: {} };
  private replica: Participant | null = null;

  constructor(private options: CallOptions = {}) {}

  on<E extends keyof CallEvents>(event: E, handler: Handler<E>): this {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event)?.add(handler as Handler<never>);
    return this;
  }

  off<E extends keyof CallEvents>(event: E, handler: Handler<E>): this {
    this.handlers.get(event)?.delete(handler as Handler<never>);
    return this;
  }

  once<E extends keyof CallEvents>(event: E, handler: Handler<E>): this {
    const wrapped: Handler<E> = (e) => {
      this.off(event, wrapped);
      handler(e);
    };
    return this.on(event, wrapped);
  }

  private emit<E extends keyof CallEvents>(event: E, payload: Omit<CallEvents[E], "action">): void {
    for (const h of [...(this.handlers.get(event) ?? [])]) (h as Handler<E>)({ action: event, ...payload } as CallEvents[E]);
  }

  meetingState(): MeetingState {
    return this.state;
  }

  /** What the link opens (after preAuth or join). */
  conversation(): JoinInfo | null {
    return this.info;
  }

  participants(): { local: Participant; replica?: Participant } {
    return this.replica ? { local: this.local, replica: this.replica } : { local: this.local };
  }

  get peerConnection(): RTCPeerConnection | null {
    return this.pc;
  }

  /** Check the link without joining (no microphone asked): bad-link or ended reject. */
  async preAuth(arg: { url: string } | string | undefined = this.options.url): Promise<JoinInfo> {
    const url = typeof arg === "string" ? arg : arg?.url;
    this.link = url ? parseCallUrl(url) : null;
    if (!this.link) throw new CallError("bad-link", "This call link is incomplete: it needs the conversation and its token (?t=).");
    const { origin, id, token } = this.link;
    const { status, body } = await request<JoinInfo>(`${origin}/v2/conversations/${encodeURIComponent(id)}/join?t=${encodeURIComponent(token)}`);
    if (status === 401 || status === 404) throw new CallError("bad-link", body.detail ?? "This call link is not valid.");
    if (status !== 200) throw new CallError("network", body.detail ?? `The server answered ${status}.`);
    this.info = body;
    if (body.status === "ended") throw new CallError("ended", "This call is over.", body.shutdown_reason);
    return body;
  }

  /** Check the link, get the microphone, connect; resolves once the call is connected. */
  async join(arg: { url: string } | string | undefined = this.options.url): Promise<void> {
    if (this.state === "joining-meeting" || this.state === "joined-meeting") throw new Error("Already in this call.");
    this.setState("joining-meeting");
    this.emit("joining-meeting", {});
    try {
      await this.connect(await this.preAuth(arg));
    } catch (err) {
      const e = err instanceof CallError ? err : new CallError("network", err instanceof Error ? err.message : String(err));
      if (this.state === "left-meeting") throw e; // left while joining
      this.close();
      this.setState("error");
      this.emit("error", { errorMsg: e.message, kind: e.kind });
      throw e;
    }
  }

  private async connect(info: JoinInfo): Promise<void> {
    const { origin, id, token } = this.link!;
    this.mic = this.options.audioSource ?? (await microphone());
    if (this.state !== "joining-meeting") {
      if (this.mic !== this.options.audioSource) this.mic.stop();
      throw new CallError("network", "The call was left before it connected.");
    }
    this.local = { ...this.local, audio: this.mic.enabled, tracks: { audio: this.mic } };
    this.replica = { session_id: "replica", user_id: info.replica_id, local: false, audio: false, video: false, tracks: {} };
    const iceServers = this.options.iceServers ?? (info.ice_servers ?? []).map((s) => (typeof s === "string" ? { urls: s } : s));
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    addEventListener("pagehide", this.hangUp);
    const channel = pc.createDataChannel("events");
    this.channel = channel;
    channel.onmessage = (e) => this.receive(e.data);
    channel.onclose = () => this.state === "joined-meeting" && this.end(null);
    pc.addTrack(this.mic, new MediaStream([this.mic]));
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = ({ track }) => {
      const r = this.replica;
      if (!r || (track.kind !== "audio" && track.kind !== "video")) return;
      r.tracks[track.kind] = track;
      r[track.kind] = true;
      this.emit("track-started", { track, participant: r, type: track.kind });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && this.state === "joined-meeting") {
        this.emit("error", { errorMsg: "The connection to the call was lost.", kind: "network" });
        this.end(null);
      }
    };
    this.emit("track-started", { track: this.mic, participant: this.local, type: "audio" });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (this.pc !== pc) throw new CallError("network", "The call was left before it connected.");
    const { status, body } = await request<{ sdp: string; type: RTCSdpType }>(
      `${origin}/v2/conversations/${encodeURIComponent(id)}/offer?t=${encodeURIComponent(token)}`,
      { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sdp: pc.localDescription?.sdp, type: "offer" }) },
    );
    const detail = body.detail ?? `The server answered ${status}.`;
    if (status === 409 && /already connected/i.test(detail)) throw new CallError("full", detail);
    if (status === 409) throw new CallError("ended", detail);
    if (status === 503) throw new CallError("capacity", detail);
    if (status === 401 || status === 404) throw new CallError("bad-link", detail);
    if (status !== 200) throw new CallError("network", detail);
    if (this.pc !== pc) throw new CallError("network", "The call was left before it connected.");
    await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });
    await connected(pc);
    this.setState("joined-meeting");
    this.emit("joined-meeting", {});
  }

  private receive(raw: unknown): void {
    let data: AppMessage;
    try {
      data = JSON.parse(String(raw));
    } catch {
      return;
    }
    if (!data || typeof data !== "object") return;
    data.properties ??= {};
    this.emit("app-message", { data, fromId: "replica" });
    if (data.event_type === "system.replica_joined" && this.replica) this.emit("participant-joined", { participant: this.replica });
    if (data.event_type === "system.shutdown") this.end(String(data.properties.shutdown_reason ?? "") || null);
  }

  /** Send `{event_type, properties}` to the replica (conversation.respond, .echo, .interrupt, ...). */
  sendAppMessage(message: Partial<AppMessage> & { event_type: string }, _to = "*"): this {
    void _to; // one other participant: the replica
    if (this.channel?.readyState !== "open") throw new Error("Not connected to a call: join first.");
    const envelope = { message_type: "conversation", conversation_id: this.link?.id, properties: {}, ...message };
    this.channel.send(JSON.stringify(envelope));
    return this;
  }

  /** Mute (false) or unmute (true) the microphone; the track stays live, so the call goes on. */
  setLocalAudio(enabled: boolean): this {
    if (this.mic) this.mic.enabled = enabled;
    this.local = { ...this.local, audio: enabled };
    this.emit("participant-updated", { participant: this.local });
    return this;
  }

  localAudio(): boolean {
    return this.local.audio;
  }

  /** Hang up: closing the peer connection ends the call on the server. */
  async leave(): Promise<void> {
    if (this.state === "joining-meeting" || this.state === "joined-meeting") this.end(null);
    else this.close();
  }

  /** Leave, and drop every handler. */
  async destroy(): Promise<void> {
    await this.leave();
    this.handlers.clear();
  }

  private end(reason: string | null): void {
    const replica = this.state === "joined-meeting" ? this.replica : null;
    this.close();
    this.setState("left-meeting");
    if (replica) this.emit("participant-left", { participant: replica });
    this.emit("left-meeting", { shutdown_reason: reason });
  }

  private close(): void {
    removeEventListener("pagehide", this.hangUp);
    this.channel?.close();
    this.pc?.close();
    // close() fires no state change: tell a join still waiting for the connection.
    this.pc?.dispatchEvent(new Event("connectionstatechange"));
    if (this.mic && this.mic !== this.options.audioSource) this.mic.stop();
    this.channel = null;
    this.pc = null;
    this.mic = null;
    this.replica = null;
  }

  /** Leaving the page hangs up at once (the server need not wait for ICE to time out). */
  private hangUp = () => void this.leave();

  private setState(state: MeetingState): void {
    this.state = state;
  }
}

async function microphone(): Promise<MediaStreamTrack> {
  if (!navigator.mediaDevices?.getUserMedia)
    throw new CallError("mic-refused", "This browser cannot use a microphone here (a call page needs https, or localhost).");
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const track = stream.getAudioTracks()[0];
    if (!track) throw new DOMException("no audio track", "NotFoundError");
    return track;
  } catch (err) {
    const name = err instanceof DOMException ? err.name : "";
    if (name === "NotFoundError" || name === "OverconstrainedError")
      throw new CallError("mic-refused", "No microphone was found. Connect one, then try again.");
    if (name === "NotReadableError") throw new CallError("mic-refused", "The microphone is in use by another application. Close it, then try again.");
    throw new CallError("mic-refused", "The microphone was not allowed.");
  }
}

/** Resolves when ICE gathering has completed, or after GATHER_MS (then with what it has). */
function gathered(pc: RTCPeerConnection): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, GATHER_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
    check();
  });
}

function connected(pc: RTCPeerConnection): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail("The call did not connect in time: a firewall may block its media (UDP)."), CONNECT_MS);
    function fail(message: string) {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      reject(new CallError("network", message));
    }
    function check() {
      if (pc.connectionState === "connected") {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        resolve();
      } else if (pc.connectionState === "failed") fail("The call could not connect: a firewall may block its media (UDP).");
      else if (pc.connectionState === "closed") fail("The call was left before it connected.");
    }
    pc.addEventListener("connectionstatechange", check);
    check();
  });
}

/** daily-js's factory: a call object for one conversation_url (passed here or to join). */
export function createCallObject(options: CallOptions = {}): DoppelCall {
  return new DoppelCall(options);
}
