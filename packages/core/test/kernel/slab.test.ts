import { describe, expect, it } from "vitest";
import { Diagnostics } from "../../src/kernel/diagnostics.js";
import { assertLive, freedAt, kfree } from "../../src/kernel/slab.js";

class Domain {
  constructor(readonly name: string) {}
}

describe("slab tracking", () => {
  it("a live object passes assertLive silently", () => {
    const diag = new Diagnostics();
    const d = new Domain("paging0");
    expect(assertLive(diag, d)).toBe(true);
    expect(freedAt(d)).toBeUndefined();
    expect(diag.records).toEqual([]);
  });

  it("use after free is reported with the object as culprit and the free site", () => {
    const diag = new Diagnostics();
    diag.currentTask = () => "destroy-task";
    const d = new Domain("paging0");
    function releaseDomain() {
      kfree(diag, d);
    }
    releaseDomain();
    expect(freedAt(d)?.task).toBe("destroy-task");
    diag.currentTask = () => "dma-task";
    const [r] = diag.expectWarningSync({ kind: "use-after-free" }, () => expect(assertLive(diag, d)).toBe(false));
    expect(r?.culprit).toBe("Domain paging0");
    expect(r?.message).toBe("use-after-free of Domain paging0");
    expect(r?.task).toBe("dma-task");
    expect(r?.related[0]).toMatchObject({ label: "freed at", task: "destroy-task" });
    expect(r?.related[0]?.stack.split("\n")[0]).toContain("releaseDomain");
  });

  it("double free is reported, naming the object and the first free", () => {
    const diag = new Diagnostics();
    const obj = { id: 3 };
    kfree(diag, obj, "iommufd_object 3");
    const [r] = diag.expectWarningSync({ kind: "double-free", culprit: "iommufd_object 3" }, () =>
      kfree(diag, obj, "iommufd_object 3"),
    );
    expect(r?.message).toBe("double free of iommufd_object 3");
    expect(r?.related[0]?.label).toBe("first freed at");
    expect(diag.unexpected()).toEqual([]);
  });
});

describe("free stacks on request", () => {
  it("without captureFreeStacks the report says how to get the stack, and turns capture on for later frees", () => {
    const diag = new Diagnostics();
    diag.captureFreeStacks = false;
    const a = new Domain("a");
    kfree(diag, a);
    const [r] = diag.expectWarningSync({ kind: "use-after-free" }, () => assertLive(diag, a));
    expect(r?.related[0]?.stack).toContain("trackFreeStacks");
    expect(diag.captureFreeStacks).toBe(true);
    const b = new Domain("b");
    function releaseB() {
      kfree(diag, b);
    }
    releaseB();
    const [r2] = diag.expectWarningSync({ kind: "double-free" }, () => kfree(diag, b));
    expect(r2?.related[0]?.stack.split("\n")[0]).toContain("releaseB");
    expect(diag.unexpected()).toEqual([]);
  });
});
