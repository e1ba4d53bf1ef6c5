/** Port of the `iommufd` fixture of tools/testing/selftests/iommu/iommufd.c (object model, size rules). */
import { CAPABILITIES } from "@iommu-sim/core";
import { describe, expect, it } from "vitest";
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_OPTION,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IOMMUFD_OBJ,
  IommufdObject,
  iommu_destroy,
  iommu_ioas_alloc,
  iommufdGetObject,
  iommufdObjectAbort,
  iommufdObjectAlloc,
  iommufdObjectFinalize,
  iommufdObjectRemove,
  iommufdPutObject,
} from "../src/index.js";
import { finish, ioasAlloc, openEnv, setup } from "./helpers.js";

describe("iommufd fixture", () => {
  it("simple_close", async () => {
    const env = await setup();
    await finish(env);
  });

  it("cmd_fail: ENOTTY, EFAULT, ENOENT", async () => {
    const env = await setup();
    await expect(env.ioctl(IOMMU_DESTROY, null)).rejects.toMatchObject({ code: "EFAULT" });
    await expect(env.ioctl(0x3b95, { size: 8 })).rejects.toMatchObject({ code: "ENOTTY" });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: 0 })).rejects.toMatchObject({ code: "ENOENT" });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: 7 })).rejects.toMatchObject({ code: "ENOENT" });
    await finish(env);
  });

  it("cmd_length: EINVAL below min size, E2BIG with a non-zero tail, zero tail = full struct", async () => {
    const env = await setup();
    const st = iommu_ioas_alloc;
    const short = st.encode({ size: st.size - 1 });
    await expect(env.ioctl(IOMMU_IOAS_ALLOC, short)).rejects.toMatchObject({ code: "EINVAL" });
    const big = new Uint8Array(st.size + 1);
    st.encode({ size: st.size + 1 }, big);
    big[st.size] = 0xaa;
    await expect(env.ioctl(IOMMU_IOAS_ALLOC, big)).rejects.toMatchObject({ code: "E2BIG" });
    big[st.size] = 0;
    await env.ioctl(IOMMU_IOAS_ALLOC, big);
    const id = st.decode(big).out_ioas_id;
    expect(id).toBe(1);
    // A size larger than the buffer cannot be read.
    const lie = st.encode({ size: 64 });
    await expect(env.ioctl(IOMMU_IOAS_ALLOC, lie)).rejects.toMatchObject({ code: "EFAULT" });
    // Destroy in byte form.
    await env.ioctl(IOMMU_DESTROY, iommu_destroy.encode({ size: 8, id }));
    await finish(env);
  });

  it("global_options: RLIMIT_MODE get/set, EPERM without CAP_SYS_RESOURCE, EBUSY with objects", async () => {
    const env = await setup();
    const cmd = {
      size: 0,
      option_id: IOMMU_OPTION_RLIMIT_MODE,
      op: IOMMU_OPTION_OP_GET,
      __reserved: 0,
      object_id: 0,
      val64: 5n,
    };
    await env.ioctl(IOMMU_OPTION, cmd);
    expect(cmd.val64).toBe(0n);
    Object.assign(cmd, { op: IOMMU_OPTION_OP_SET, val64: 1n });
    await env.ioctl(IOMMU_OPTION, cmd);
    Object.assign(cmd, { op: IOMMU_OPTION_OP_GET, val64: 5n });
    await env.ioctl(IOMMU_OPTION, cmd);
    expect(cmd.val64).toBe(1n);
    Object.assign(cmd, { op: IOMMU_OPTION_OP_SET, val64: 2n });
    await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EINVAL" });
    Object.assign(cmd, { op: 3 });
    await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    Object.assign(cmd, { op: IOMMU_OPTION_OP_SET, val64: 0n, object_id: 1 });
    await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    Object.assign(cmd, { object_id: 0, __reserved: 1 });
    await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EOPNOTSUPP" });
    cmd.__reserved = 0;
    await ioasAlloc(env);
    await expect(env.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EBUSY" });
    // A process without CAP_SYS_RESOURCE may not change the mode.
    const weak = await openEnv(
      env.m,
      env.m.spawnProcess({ capabilities: CAPABILITIES.filter((c) => c !== "CAP_SYS_RESOURCE") }),
    );
    await expect(weak.ioctl(IOMMU_OPTION, cmd)).rejects.toMatchObject({ code: "EPERM" });
    await weak.close();
    await weak.p.exit();
    await finish(env);
  });

  it("ioas IDs start at 1, the lowest free ID is reused, destroy of a destroyed ID is ENOENT", async () => {
    const env = await setup();
    expect(await ioasAlloc(env)).toBe(1);
    expect(await ioasAlloc(env)).toBe(2);
    await env.ioctl(IOMMU_DESTROY, { size: 0, id: 1 });
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: 1 })).rejects.toMatchObject({ code: "ENOENT" });
    expect(await ioasAlloc(env)).toBe(1);
    await expect(env.ioctl(IOMMU_IOAS_ALLOC, { size: 0, flags: 1, out_ioas_id: 0 })).rejects.toMatchObject({
      code: "EOPNOTSUPP",
    });
    await finish(env);
  });

  it("an unfinalized object is invisible, abort releases its ID", async () => {
    const env = await setup();
    const obj = iommufdObjectAlloc(env.ictx, IOMMUFD_OBJ.IOAS, () => new IommufdObject());
    expect(obj.id).toBe(1);
    expect(() => iommufdGetObject(env.ictx, 1, IOMMUFD_OBJ.IOAS)).toThrow(/ENOENT/);
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id: 1 })).rejects.toMatchObject({ code: "ENOENT" });
    // The reserved ID is not handed out again.
    expect(await ioasAlloc(env)).toBe(2);
    iommufdObjectAbort(env.ictx, obj);
    expect(await ioasAlloc(env)).toBe(1);
    await finish(env);
  });

  it("wrong-type lookup is ENOENT; destroy with a short-term user is EBUSY; injected lookup failure is ENOENT", async () => {
    const env = await setup();
    const id = await ioasAlloc(env);
    expect(() => iommufdGetObject(env.ictx, id, IOMMUFD_OBJ.DEVICE)).toThrow(/ENOENT/);
    const o = iommufdGetObject(env.ictx, id, IOMMUFD_OBJ.IOAS);
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id })).rejects.toMatchObject({ code: "EBUSY" });
    iommufdPutObject(env.ictx, o);
    env.m.faults.failSite("iommufd_get_object", 1);
    await expect(env.ioctl(IOMMU_IOAS_IOVA_RANGES, { size: 0, ioas_id: id })).rejects.toMatchObject({ code: "ENOENT" });
    env.m.faults.reset();
    await env.ioctl(IOMMU_DESTROY, { size: 0, id });
    await finish(env);
  });

  it("tombstone: the ID stays reserved until close, destroy of it is ENOENT", async () => {
    const env = await setup();
    const id = await ioasAlloc(env);
    const o = iommufdGetObject(env.ictx, id, IOMMUFD_OBJ.IOAS);
    // Kernel-side removal with REMOVE_WAIT | TOMBSTONE, holding a users ref like a kernel owner would.
    o.users.inc();
    iommufdPutObject(env.ictx, o);
    await iommufdObjectRemove(env.ictx, o, id, 3);
    await expect(env.ioctl(IOMMU_DESTROY, { size: 0, id })).rejects.toMatchObject({ code: "ENOENT" });
    expect(await ioasAlloc(env)).toBe(id + 1);
    await finish(env);
  });

  it("close() with a refcount bug WARNs instead of hanging", async () => {
    const env = await setup();
    const id = await ioasAlloc(env);
    const o = iommufdGetObject(env.ictx, id, IOMMUFD_OBJ.IOAS);
    o.users.inc(); // leaked reference
    iommufdPutObject(env.ictx, o);
    await env.m.diag.expectWarning(/cannot free/, () => env.close());
    // Undo the bug so teardown's leak check sees the object go.
    expect(env.m.diag.ofKind("warning").length).toBeGreaterThan(0);
    await expect(env.m.teardown()).rejects.toThrow(/leaked/);
  });

  // iommufd_vfio_ioas: GET answers get_compat_ioas's ENODEV when no compat IOAS is set (or it is gone).
  it("vfio_ioas: GET without one is ENODEV, SET/GET", async () => {
    const env = await setup();
    const cmd = { size: 0, ioas_id: 0, op: IOMMU_VFIO_IOAS_GET, __reserved: 0 };
    await expect(env.ioctl(IOMMU_VFIO_IOAS, cmd)).rejects.toMatchObject({ code: "ENODEV" });
    const id = await ioasAlloc(env);
    await env.ioctl(IOMMU_VFIO_IOAS, { size: 0, ioas_id: id, op: IOMMU_VFIO_IOAS_SET, __reserved: 0 });
    await env.ioctl(IOMMU_VFIO_IOAS, cmd);
    expect(cmd.ioas_id).toBe(id);
    await env.ioctl(IOMMU_DESTROY, { size: 0, id });
    await expect(env.ioctl(IOMMU_VFIO_IOAS, cmd)).rejects.toMatchObject({ code: "ENODEV" });
    void iommufdObjectFinalize;
    await finish(env);
  });
});
