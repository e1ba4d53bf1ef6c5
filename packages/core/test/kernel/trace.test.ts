import { describe, expect, it } from "vitest";
import { createMachine, Tracepoints, type TraceRecord } from "../../src/index.js";

describe("tracepoints", () => {
  it("are disabled until a sink attaches, number records from 1, and disable again when the last sink goes", () => {
    const t = new Tracepoints();
    expect(t.enabled).toBe(false);
    const got: TraceRecord[] = [];
    const off = t.attach((r) => got.push(r));
    expect(t.enabled).toBe(true);
    t.emit("test:a", { x: 1 });
    t.emit("test:b", { y: "z" });
    expect(got).toEqual([
      { seq: 1, event: "test:a", fields: { x: 1 } },
      { seq: 2, event: "test:b", fields: { y: "z" } },
    ]);
    off();
    expect(t.enabled).toBe(false);
  });

  it("detach a sink that throws and keep delivering to the others", () => {
    const t = new Tracepoints();
    const got: string[] = [];
    t.attach(() => {
      throw new Error("broken sink");
    });
    t.attach((r) => got.push(r.event));
    t.emit("test:a", {});
    t.emit("test:b", {});
    expect(got).toEqual(["test:a", "test:b"]);
  });

  it("belong to one machine: two machines never see each other's events", async () => {
    const a = await createMachine({ seed: 1 });
    const b = await createMachine({ seed: 1 });
    const seen: string[] = [];
    a.diag.trace.attach((r) => seen.push(r.event));
    b.diag.trace.emit("other:event", {});
    expect(seen).toEqual([]);
    expect(b.diag.trace.enabled).toBe(false);
    await a.teardown();
    await b.teardown();
  });
});
