import { describe, expect, it } from "vitest";
import { createMachine, type Machine, TeardownError } from "../../src/index.js";

describe("Machine[Symbol.asyncDispose] (await using)", () => {
  it("tears the machine down when the scope ends", async () => {
    let seen: Machine | undefined;
    {
      await using m = await createMachine({ seed: 1 });
      await m.boot();
      seen = m;
      expect(m.tornDown).toBe(false);
    }
    expect(seen.tornDown).toBe(true);
  });

  it("does nothing more when the scope already called teardown()", async () => {
    let seen: Machine | undefined;
    {
      await using m = await createMachine();
      await m.boot();
      await m.teardown();
      seen = m;
    }
    expect(seen.tornDown).toBe(true);
  });

  it("rejects with the TeardownError of a leak at the end of the scope", async () => {
    const scope = async () => {
      await using m = await createMachine();
      await m.boot();
      m.pages.allocPages(0, "dispose_leaky_site");
    };
    const err = await scope().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TeardownError);
    expect((err as TeardownError).report).toMatch(/dispose_leaky_site/);
  });
});
