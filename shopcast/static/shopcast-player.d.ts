// Types of shopcast-player.js, the viewer module shopcast serves at /static/shopcast-player.js.

/** A tag as the control API took it (`POST /api/v1/streams/{id}/tags`), on the media timeline. */
export interface ShopcastTag {
  /** The tag id (the DATERANGE ID, the emsg JSON's "id"). */
  id: string;
  /** "product" (a pin: ends on the next pin), "deal" (ends after its duration), "poll". */
  kind: string;
  product_id: string | null;
  /** The tag's `data` as posted (any JSON; `{}` when none). Merchant text: render it as text. */
  data: unknown;
  /** Seconds on the video element's timeline of the tagged frame. */
  start: number | null;
  /** Seconds on the same timeline where it ends; null while unknown (the current pin). */
  end: number | null;
}

/** `tag`: the tag's first frame is on screen (fired inside that frame's callback). */
export interface ShopcastTagFire extends ShopcastTag {
  /** mediaTime of the presented frame the tag fired on. */
  mediaTime: number;
  /** More than 0.1 s after the tag's start (joined or seeked into it). */
  late: boolean;
}

/** `tagend`: its end frame is on screen ("end"), or the first frame after a seek is outside it ("seek"). */
export interface ShopcastTagEnd extends ShopcastTag {
  mediaTime: number | null;
  reason: "end" | "seek";
}

/** `cue`: one delivery path reached its frame (diagnostics; `tag` is the de-duplicated event). */
export interface ShopcastCue {
  id: string;
  path: "daterange" | "emsg";
  start: number;
  mediaTime: number;
  previousMediaTime: number | null;
  late: boolean;
  /** requestVideoFrameCallback's metadata of the frame (null on the timeupdate fallback). */
  metadata: VideoFrameCallbackMetadata | null;
}

/** `latency`: once a second on a live stream. */
export interface ShopcastLatency {
  /** Seconds from the program date-time of the frame at the playhead to this device's clock. */
  latency: number;
  /** hls.js only: its own figure, distance from the playlist's live edge (null otherwise). */
  edge: number | null;
}

export interface ShopcastPlayerEventMap {
  tag: CustomEvent<ShopcastTagFire>;
  tagend: CustomEvent<ShopcastTagEnd>;
  /** Once a tag: its range was over when playback reached it (joined later, seeked past). */
  tagpassed: CustomEvent<ShopcastTag>;
  cue: CustomEvent<ShopcastCue>;
  latency: CustomEvent<ShopcastLatency>;
}

export interface ShopcastPlayerOptions {
  /** hls.js: the `Hls` class (the module makes the instance) or your own instance. */
  hls?: any;
  /** Shaka Player: `shaka.Player` (the module makes the instance) or your own instance. */
  shaka?: any;
  /** The player's own settings, merged under the ones the module needs. */
  config?: Record<string, unknown>;
  /** Shaka: tries of `load()`, a second apart, for a page opened before the show is on air
   * (default 1). With hls.js, its own `manifestLoadPolicy` does that. */
  loadAttempts?: number;
}

/** hls.js settings the module sets (both tag paths on the metadata track). */
export declare const HLS_CONFIG: Readonly<Record<string, boolean>>;
/** Shaka settings the module sets (emsg ID3 boxes surfaced). */
export declare const SHAKA_CONFIG: Readonly<{ mediaSource: { dispatchAllEmsgBoxes: boolean } }>;
/** Seconds before a start or end at which a frame counts as having reached it. */
export declare const EPSILON: number;

export declare class ShopcastPlayer extends EventTarget {
  constructor(video: HTMLVideoElement, url: string, options?: ShopcastPlayerOptions);
  readonly video: HTMLVideoElement;
  readonly url: string;
  /** The hls.js or Shaka instance (null on the browser's own HLS). */
  readonly player: any;
  readonly engine: "hls.js" | "shaka" | "native" | null;
  /** hls.js only: times playback stood still before a hole and was moved to the live edge
   * (a show continued on another origin after a failover). */
  readonly liveJumps?: number;
  /** hls.js only: 1 when the start was moved to hls.js's live sync position (its own start
   * seek was lost to its gap controller, or left the playhead more than a part behind). */
  readonly startJumps?: number;
  /** The last latency reading in seconds (null before one, and on a replay). */
  readonly latency: number | null;
  /** Every tag seen so far, in time order. */
  readonly tags: ShopcastTag[];
  /** Load the URL and start watching; resolves once loading began. */
  start(): Promise<void>;
  /** Stop watching; destroys the player if the module made it. */
  destroy(): void;
  addEventListener<K extends keyof ShopcastPlayerEventMap>(
    type: K,
    listener: (this: ShopcastPlayer, ev: ShopcastPlayerEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof ShopcastPlayerEventMap>(
    type: K,
    listener: (this: ShopcastPlayer, ev: ShopcastPlayerEventMap[K]) => any,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | EventListenerOptions,
  ): void;
}
