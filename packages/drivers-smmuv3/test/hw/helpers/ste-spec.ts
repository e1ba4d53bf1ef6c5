/**
 * The architecture's STE and CD-table rules as an independent expectation (SMMUv3 spec 5.2: STE.V, Config,
 * S1Fmt, S1CDMax, S1DSS; L1CD.V and CD.V), written from the specification's field tables, not from the model or
 * the driver. Used by the hardware-level and the guest-level (vSTE) property tests.
 */
import { EVT_ID } from "../../../src/hw/index.js";

/** What the transaction's output address tells apart: stage-1 bypassed entirely, or only stage 2 applied. */
export const MARK_BYPASS = 100;
export const MARK_S2 = 101;

export interface Features {
  name: string;
  stages: "s1" | "s2" | "s1s2";
  ssidBits: number;
  cd2l: boolean;
}

export interface Case {
  v: boolean;
  config: number;
  s1fmt: number;
  s1cdmax: number;
  s1dss: number;
  /** -1: a transaction without a SubstreamID. */
  ssid: number;
  /** The CD at the index the transaction selects: which page table it names, or invalid (V = 0). */
  cdPool: number;
  cdValid: boolean;
  /** CD 0 (used by traffic without a SubstreamID under S1DSS 0b10). */
  cd0Pool: number;
  cd0Valid: boolean;
  l1Valid: boolean;
}

export type Outcome = { abort: true } | { event: number; ssid: number } | { mark: number };

/** What the architecture says this transaction does. */
export function expected(c: Case, f: Features): Outcome {
  const ev = (event: number) => ({ event, ssid: c.ssid });
  const s1p = f.stages !== "s2";
  const s2p = f.stages !== "s1";
  if (!c.v) return ev(EVT_ID.C_BAD_STE);
  // Config 0b000 aborts; 0b001-0b011 are reserved and behave as 0b000. No event either way.
  if (c.config < 4) return { abort: true };
  const s1 = (c.config & 1) !== 0;
  const s2 = (c.config & 2) !== 0;
  // Config 0b1x1 without stage 1, 0b11x without stage 2: ILLEGAL, as V = 0.
  if ((s1 && !s1p) || (s2 && !s2p)) return ev(EVT_ID.C_BAD_STE);
  const afterS1 = s2 ? { mark: MARK_S2 } : { mark: MARK_BYPASS };
  if (!s1) return c.ssid >= 0 ? ev(EVT_ID.C_BAD_SUBSTREAMID) : afterS1;
  // S1CDMax is IGNORED without substreams (SSIDSIZE = 0); above SSIDSIZE it is ILLEGAL.
  if (f.ssidBits > 0 && c.s1cdmax > f.ssidBits) return ev(EVT_ID.C_BAD_STE);
  const cdmax = f.ssidBits === 0 ? 0 : c.s1cdmax;
  // S1Fmt is IGNORED with substreams disabled; otherwise != 0b00 is ILLEGAL without 2-level CD table support.
  if (cdmax > 0 && !f.cd2l && c.s1fmt !== 0) return ev(EVT_ID.C_BAD_STE);
  const dss = c.s1dss === 3 ? 0 : c.s1dss; // 0b11 reserved, behaves as 0b00
  let idx = 0;
  if (c.ssid >= 0) {
    if (cdmax === 0 || c.ssid >= 2 ** cdmax) return ev(EVT_ID.C_BAD_SUBSTREAMID);
    if (c.ssid === 0 && dss === 2) return ev(EVT_ID.F_STREAM_DISABLED);
    idx = c.ssid;
  } else if (cdmax > 0) {
    if (dss === 0) return ev(EVT_ID.F_STREAM_DISABLED);
    if (dss === 1) return afterS1;
  }
  const fmt = cdmax === 0 || c.s1fmt === 3 ? 0 : c.s1fmt; // 0b11 reserved, behaves as 0b00
  if (fmt !== 0 && !c.l1Valid) return ev(EVT_ID.C_BAD_SUBSTREAMID);
  const valid = idx === 0 ? c.cd0Valid : c.cdValid;
  if (!valid) return ev(EVT_ID.C_BAD_CD);
  return { mark: idx === 0 ? c.cd0Pool : c.cdPool };
}
