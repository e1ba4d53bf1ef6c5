/**
 * A guest writes vSTEs: random guest STEs (every V, Config, S1DSS, S1Fmt and S1CDMax value) go through
 * IOMMU_HWPT_ALLOC of a nested HWPT, the device is attached, and its DMA, with and without a SubstreamID, must do
 * what the architecture says for the STE the host installs (test/hw/helpers/ste-spec.ts, written from the
 * specification). The host's part is Linux's `arm_smmu_validate_vste` and `arm_smmu_make_nested_domain_ste`: a
 * vSTE with V=0 becomes all zeroes (abort), Config other than abort/bypass/stage-1 is EIO, guest bypass becomes a
 * stage-2-only STE and guest stage 1 a nested one; the guest's S1 fields reach the hardware as written.
 */
import { DmaFault } from "@iommu-sim/core";
import { destroy, vfioDeviceAttachPt, vfioDeviceDetachPt } from "@iommu-sim/iommufd";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SMMU_ABORT } from "../../src/hw/index.js";
import { STE } from "../../src/index.js";
import { type Case, expected, type Features, MARK_S2, type Outcome } from "../hw/helpers/ste-spec.js";
import {
  G,
  GIOVA,
  guestBuildS1,
  guestRead,
  guestWrite64,
  ipa,
  nestedAlloc,
  parentAlloc,
  type Vmm,
  vdeviceAlloc,
  viommuAlloc,
  vmmSetup,
} from "./env.js";

/** The default platform's SMMU: 20 SubstreamID bits, 2-level CD tables, both stages. */
const F: Features = { name: "default", stages: "s1s2", ssidBits: 20, cd2l: true };
/** CDs the guest writes in its linear CD table (one page at G.CD holds 64). */
const WRITTEN = [0, 1, 5];

interface GuestCase {
  v: boolean;
  config: number;
  s1fmt: number;
  s1cdmax: number;
  s1dss: number;
  ssid: number;
}

const caseArb: fc.Arbitrary<GuestCase> = fc.record({
  v: fc.oneof({ arbitrary: fc.constant(true), weight: 9 }, { arbitrary: fc.constant(false), weight: 1 }),
  config: fc.oneof({ arbitrary: fc.nat(7), weight: 2 }, { arbitrary: fc.constant(5), weight: 5 }),
  // Linear (and the reserved 0b11, which behaves as linear) keep every CD in the guest's one CD page; the 2-level
  // formats are held to the rules by the hardware-level test.
  s1fmt: fc.constantFrom(0, 3),
  s1cdmax: fc.oneof({ arbitrary: fc.nat(31), weight: 1 }, { arbitrary: fc.nat(6), weight: 3 }),
  s1dss: fc.nat(3),
  ssid: fc.constantFrom(-1, 0, 1, 2, 5, 8, 63),
});

describe("vSTE rules through a nested HWPT", () => {
  let v: Vmm;
  let viommu = 0;

  beforeAll(async () => {
    v = await vmmSetup("smmu-dma0", { strict: true });
    const s2 = await parentAlloc(v);
    viommu = await viommuAlloc(v, s2);
    await vdeviceAlloc(v, viommu, 0x42);
    guestBuildS1(v);
    // CDs 1 and 5 copy CD 0 (same stage 1); every other CD of the page stays invalid (V = 0).
    for (const idx of WRITTEN) {
      for (let i = 0; i < 8; i++) {
        const w = guestRead(v, ipa(G.CD) + 8 * i, 8);
        guestWrite64(v, ipa(G.CD) + 64 * idx + 8 * i, new DataView(w.buffer, w.byteOffset, 8).getBigUint64(0, true));
      }
    }
  });

  afterAll(async () => {
    await v.p.exit();
    await v.m.teardown();
  });

  /** What the vSTE does, in the hardware's terms: the STE the host installs, run through the spec's rules. */
  function want(c: GuestCase): Outcome | "EIO" {
    if (!c.v) return { abort: true }; // V = 0: the host installs an all-zero (abort) STE
    if (c.config !== 0 && c.config !== 4 && c.config !== 5) return "EIO";
    const hostConfig = c.config === 0 ? 0 : c.config === 4 ? 6 : 7;
    const hw: Case = {
      v: true,
      config: hostConfig,
      s1fmt: c.s1fmt,
      s1cdmax: c.s1cdmax,
      s1dss: c.s1dss,
      ssid: c.ssid,
      cdPool: 1,
      cdValid: WRITTEN.includes(c.ssid),
      cd0Pool: 0,
      cd0Valid: true,
      l1Valid: true,
    };
    return expected(hw, F);
  }

  it("every guest V, Config, S1DSS, S1Fmt and S1CDMax, with and without a SubstreamID", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const vste = new Uint8Array(16);
        const dv = new DataView(vste.buffer);
        const d0 =
          (c.v ? STE.V.mask : 0n) |
          (BigInt(c.config) << 1n) |
          (BigInt(c.s1fmt) << 4n) |
          BigInt(ipa(G.CD)) |
          (BigInt(c.s1cdmax) << 59n);
        dv.setBigUint64(0, d0, true);
        dv.setBigUint64(8, BigInt(c.s1dss), true);
        const w = want(c);
        if (w === "EIO") {
          await expect(nestedAlloc(v, viommu, vste)).rejects.toMatchObject({ code: "EIO" });
          return;
        }
        const hwpt = await nestedAlloc(v, viommu, vste);
        await vfioDeviceAttachPt(v.p, v.devfd, hwpt);
        // Stage-2-only traffic addresses guest RAM by IPA; stage-1 traffic uses the guest IOVA its CDs map.
        const off = 0x100 + (n++ % 64) * 16;
        const iova = "mark" in w && w.mark === MARK_S2 ? ipa(G.DATA_A) + off : GIOVA + off;
        const data = new Uint8Array([n & 0xff, 0x5a]);
        let got: Outcome;
        try {
          v.m.device("smmu-dma0").dmaWrite(iova, data, c.ssid >= 0 ? { pasid: c.ssid } : {});
          const landed = [...guestRead(v, ipa(G.DATA_A) + off, 2)];
          got = landed[0] === data[0] && landed[1] === data[1] ? ("mark" in w ? w : { mark: -1 }) : { mark: -2 };
        } catch (e) {
          if (!(e instanceof DmaFault)) throw e;
          got = e.faultCode === SMMU_ABORT ? { abort: true } : { event: e.faultCode, ssid: c.ssid };
        }
        await vfioDeviceDetachPt(v.p, v.devfd);
        await destroy(v.p, v.iommufd, hwpt);
        expect(got).toEqual(w);
      }),
      { numRuns: 120, seed: 0x75e },
    );
    expect(v.hw.stats.staleReports).toBe(0);
  });
});
